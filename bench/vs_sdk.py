"""Benchmark: our D7 client against the official ``direct7`` SDK, side by side, same machine, same run.

    python -m bench.vs_sdk [--sends 500] [--concurrency 50] [--sequential 40] [--delay 0.05]

Two servers, each answering an SMS send after --delay: the project's fake D7 (aiohttp, as a process) and a plain
threaded HTTP/1.1 server (``ThreadingHTTPServer``, ``protocol_version = "HTTP/1.1"``, keep-alive), the kind the SDK
is usually measured against. On each: the SDK 0.0.16 (``requests``, one shared ``Client(pool_maxsize=N)``, N
threads) and our ``D7Client`` with N sends in flight; then both one at a time. Prints sends/s and our/SDK ratios.
The SDK comes from the ``bench`` extra (``pip install -e '.[bench]'``): nothing is installed at run time. Traffic
only goes to 127.0.0.1; bounded by --sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._fake import fake_d7_process
from bot.d7 import D7Client
from tests.fakes.d7 import TOKEN

try:
    import direct7
except ImportError:  # pragma: no cover - the bench extra is not installed
    direct7 = None


@contextmanager
def threaded_server(delay: float) -> Iterator[str]:
    """A plain threaded HTTP/1.1 server that accepts every send after ``delay`` seconds (keep-alive)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            time.sleep(delay)
            body = b'{"request_id": "00000000-0000-0000-0000-000000000000", "status": "accepted", '
            body += b'"created_at": "2026-12-01T00:00:00Z"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default 5 resets a burst of 50 new connections

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sdk_run(url: str, sends: int, concurrency: int) -> float:
    """Sends/s of the SDK: one shared client, ``concurrency`` threads."""
    assert direct7 is not None
    client = direct7.Client(api_token=TOKEN, pool_maxsize=max(concurrency, 1), pool_connections=1)
    client.host(url)
    client.session.mount("http://", client.adapter)  # the SDK mounts its pool for https:// only
    message = {"recipients": ["+14155550100"], "content": "bench"}
    client.sms.send_messages(message, originator="Bench")  # warm-up: the connection and imports

    def one(i: int) -> None:
        client.sms.send_messages(
            {"recipients": [f"+1415555{i % 10000:04d}"], "content": f"bench {i}"}, originator="Bench"
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(sends)))
    return sends / (time.perf_counter() - started)


async def ours_run(url: str, sends: int, concurrency: int) -> float:
    """Sends/s of our client: ``concurrency`` sends in flight on one event loop."""
    gate = asyncio.Semaphore(concurrency)
    async with D7Client(SecretStr(TOKEN), base_url=url) as client:
        await client.send_sms(["+14155550100"], "warm-up", originator="Bench")

        async def one(i: int) -> None:
            async with gate:
                result = await client.send_sms([f"+1415555{i % 10000:04d}"], f"bench {i}", originator="Bench")
                assert result.accepted

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sends)))
        return sends / (time.perf_counter() - started)


def compare(url: str, sends: int, concurrency: int, sequential: int) -> dict[str, float]:
    sdk = sdk_run(url, sends, concurrency)
    ours = asyncio.run(ours_run(url, sends, concurrency))
    sdk_one = sdk_run(url, sequential, 1)
    ours_one = asyncio.run(ours_run(url, sequential, 1))
    return {
        "sdk_sends_per_s": round(sdk, 1),
        "ours_sends_per_s": round(ours, 1),
        "ratio": round(ours / sdk, 2),
        "sdk_sequential_per_s": round(sdk_one, 1),
        "ours_sequential_per_s": round(ours_one, 1),
        "sequential_ratio": round(ours_one / sdk_one, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each server takes to answer")
    args = parser.parse_args()
    if direct7 is None:
        raise SystemExit("the direct7 SDK is not installed: pip install -e '.[bench]'")
    results = {}
    with threaded_server(args.delay) as url:
        results["threaded_http11"] = compare(url, args.sends, args.concurrency, args.sequential)
    with fake_d7_process(args.delay) as url:
        results["project_fake_d7"] = compare(url, args.sends, args.concurrency, args.sequential)
    print(json.dumps({"delay_ms": args.delay * 1000, "concurrency": args.concurrency, **results}, indent=2))


if __name__ == "__main__":
    main()

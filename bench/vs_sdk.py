"""Benchmark: our D7 client against the official ``direct7`` SDK, side by side, same machine, same run.

    python -m bench.vs_sdk [--sends 500] [--concurrency 50,200] [--sequential 40] [--delay 0.05]

Two servers, each answering an SMS send after --delay, each in a process of its own: the project's fake D7
(aiohttp) and a plain threaded HTTP/1.1 server (``ThreadingHTTPServer``, ``protocol_version = "HTTP/1.1"``,
keep-alive), the kind the SDK is usually measured against. On each, for each --concurrency N: the SDK 0.0.16
(``requests``, one shared ``Client(pool_maxsize=N)``, N threads) and our ``D7Client`` with N sends in flight, each
first warmed up with N sends (its pool's connections opened); then both one at a time. Prints sends/s, the client's
own CPU seconds per 1,000 sends (``time.process_time()`` of this process, which runs only the client: the servers
are other processes) and our/SDK ratios. The SDK comes from the ``bench`` extra (``pip install -e '.[bench]'``):
nothing is installed at run time. Traffic only goes to 127.0.0.1; bounded by --sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._fake import ROOT, fake_d7_process
from bot.d7 import D7Client
from tests.fakes.d7 import TOKEN

try:
    import direct7
except ImportError:  # pragma: no cover - the bench extra is not installed
    direct7 = None


def serve_threaded(delay: float) -> None:
    """A plain threaded HTTP/1.1 server that accepts every send after ``delay`` seconds (keep-alive); prints its
    port as the project's fakes do, serves until terminated."""

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
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


@contextmanager
def threaded_server(delay: float) -> Iterator[str]:
    """The threaded server as a process of its own, so its CPU is not counted as the client's."""
    command = [sys.executable, "-m", "bench.vs_sdk", "--serve-threaded", str(delay)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the threaded server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Run:
    sends_per_s: float
    cpu_s: float  # the client's: this process's CPU time while it sent

    def cpu_per_1000(self, sends: int) -> float:
        return self.cpu_s * 1000 / sends


def sdk_run(url: str, sends: int, concurrency: int) -> Run:
    """The SDK: one shared client, ``concurrency`` threads, warmed up with ``concurrency`` sends."""
    assert direct7 is not None
    client = direct7.Client(api_token=TOKEN, pool_maxsize=max(concurrency, 1), pool_connections=1)
    client.host(url)
    client.session.mount("http://", client.adapter)  # the SDK mounts its pool for https:// only

    def one(i: int) -> None:
        client.sms.send_messages(
            {"recipients": [f"+1415555{i % 10000:04d}"], "content": f"bench {i}"}, originator="Bench"
        )

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: the threads, the connections, the imports
        cpu, started = time.process_time(), time.perf_counter()
        list(pool.map(one, range(sends)))
        return Run(sends / (time.perf_counter() - started), time.process_time() - cpu)


async def ours_run(url: str, sends: int, concurrency: int) -> Run:
    """Our client: ``concurrency`` sends in flight on one event loop, warmed up with ``concurrency`` sends."""
    gate = asyncio.Semaphore(concurrency)
    async with D7Client(SecretStr(TOKEN), base_url=url) as client:

        async def one(i: int) -> None:
            async with gate:
                result = await client.send_sms([f"+1415555{i % 10000:04d}"], f"bench {i}", originator="Bench")
                assert result.accepted

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up: the pool's connections
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sends)))
        return Run(sends / (time.perf_counter() - started), time.process_time() - cpu)


def compare(url: str, sends: int, concurrency: int) -> dict[str, float]:
    sdk = sdk_run(url, sends, concurrency)
    ours = asyncio.run(ours_run(url, sends, concurrency))
    return {
        "sdk_sends_per_s": round(sdk.sends_per_s, 1),
        "ours_sends_per_s": round(ours.sends_per_s, 1),
        "ratio": round(ours.sends_per_s / sdk.sends_per_s, 2),
        "sdk_cpu_s_per_1000": round(sdk.cpu_per_1000(sends), 3),
        "ours_cpu_s_per_1000": round(ours.cpu_per_1000(sends), 3),
        "cpu_ratio": round(ours.cpu_s / sdk.cpu_s, 2),
    }


def on_server(url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {f"{n}_in_flight": compare(url, args.sends, n) for n in args.concurrency}
    results["sequential"] = compare(url, args.sequential, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--concurrency", default="50,200", help="sends in flight, comma-separated")
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each server takes to answer")
    parser.add_argument("--serve-threaded", type=float, help=argparse.SUPPRESS)  # the threaded server's process
    args = parser.parse_args()
    if args.serve_threaded is not None:
        serve_threaded(args.serve_threaded)
        return
    if direct7 is None:
        raise SystemExit("the direct7 SDK is not installed: pip install -e '.[bench]'")
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    results = {}
    with threaded_server(args.delay) as url:
        results["threaded_http11"] = on_server(url, args)
    with fake_d7_process(args.delay) as url:
        results["project_fake_d7"] = on_server(url, args)
    print(json.dumps({"delay_ms": args.delay * 1000, "sends": args.sends, **results}, indent=2))


if __name__ == "__main__":
    main()

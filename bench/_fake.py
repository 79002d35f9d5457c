"""Start the fake D7 server as a child process on loopback (so it does not share our GIL)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def fake_d7_process(delay: float) -> Iterator[str]:
    """Yield the base URL of a fake D7 answering after ``delay`` seconds; kill it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.d7", "--delay", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake D7 did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

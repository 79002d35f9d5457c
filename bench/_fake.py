"""Start the loopback fakes as child processes (so they do not share the load generator's GIL)."""

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
    with _process("tests.fakes.d7", "--delay", str(delay)) as url:
        yield url


@contextmanager
def fake_slack_process(*args: str) -> Iterator[str]:
    """Yield the base URL of a fake Slack Web API (``tests.fakes.slack`` options); kill it afterwards."""
    with _process("tests.fakes.slack", *args) as url:
        yield url


@contextmanager
def _process(module: str, *args: str) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

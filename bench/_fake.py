"""Start the loopback fakes as child processes (so they do not share the load generator's GIL)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
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
def loopback_fakes(d7_delay: float, *slack_args: str) -> Iterator[tuple[Path, str, str]]:
    """A work folder holding the test policy, the fake Slack (bot in #ops; ``slack_args``: more of
    ``tests.fakes.slack``'s options) and the fake D7, as processes."""
    from tests.harness import POLICY

    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_slack_process(
            "--channel", "C0OPS", "--usergroup", "S0SUPPORT=", "--no-channel-limit", *slack_args
        ) as slack_url,
        fake_d7_process(d7_delay) as d7_url,
    ):
        work = Path(tmp)
        (work / "policy.yml").write_text(bench_policy(POLICY))
        yield work, slack_url, d7_url


def bench_policy(policy: str) -> str:
    """The test policy without the default per-person budget (100 messages an hour): a benchmark sends one person's
    thousand texts to measure the bot, not to be refused by its budget."""
    defaults = "defaults: {region: US,"
    if defaults not in policy:
        raise ValueError("the test policy's defaults line changed: bench_policy cannot opt out of the budget")
    return policy.replace(defaults, "defaults: {limits: {per_user: none}, region: US,", 1)


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

"""The D7 Networks gateway: the real HTTP client and its dry-run twin."""

from __future__ import annotations

from bot.d7.client import D7Client
from bot.d7.dryrun import DryRunGateway
from bot.d7.retry import CLIENT_RETRY

__all__ = ["CLIENT_RETRY", "D7Client", "DryRunGateway"]

"""Only this installation's requests: every install of one Slack app shares its signing secret, so a correctly
signed request may come from another workspace (or another Enterprise Grid org) that installed the same app.

Those are refused with 401 before any listener runs, and each foreign workspace is logged once (a burst from it
does not flood the log). An org-wide install is matched by its enterprise ID (its workspaces differ); a workspace
install by its team ID (and, when both name one, the enterprise ID); a request naming an enterprise but no team
comes from an org-wide install, never a workspace install's. A request that names neither (Slack's own, such as
``app_rate_limited``) goes through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger("bot.slack")


class ThisInstallationOnly:
    """A Bolt global middleware (``app.use``): 401 for requests from another workspace or org."""

    def __init__(self, team_id: str | None, enterprise_id: str | None, enterprise_install: bool) -> None:
        self.team_id = team_id
        self.enterprise_id = enterprise_id
        self.enterprise_install = enterprise_install
        self._seen: set[tuple[str | None, str | None]] = set()

    def foreign(self, team_id: str | None, enterprise_id: str | None) -> bool:
        """Whether a request naming ``team_id`` / ``enterprise_id`` comes from outside this installation."""
        if self.enterprise_install:
            # Any workspace of this org; a request naming a team and no enterprise is a workspace outside Grid.
            return (team_id is not None or enterprise_id is not None) and enterprise_id != self.enterprise_id
        if enterprise_id is not None and self.enterprise_id is not None and enterprise_id != self.enterprise_id:
            return True
        if team_id is None:
            # An org-wide install (of this app, in any org) speaks for its enterprise and names no workspace: never
            # this workspace install's. Only Slack's own requests name neither.
            return enterprise_id is not None
        return self.team_id is not None and team_id != self.team_id

    async def __call__(
        self, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        team_id, enterprise_id = req.context.team_id, req.context.enterprise_id
        if not self.foreign(team_id, enterprise_id):
            return await next()
        if (team_id, enterprise_id) not in self._seen and len(self._seen) < 1000:
            self._seen.add((team_id, enterprise_id))
            log.warning(
                "refused a request from another installation (team %s, enterprise %s); this bot serves team %s%s",
                team_id,
                enterprise_id or "none",
                self.team_id,
                f" in enterprise {self.enterprise_id}" if self.enterprise_id else "",
            )
        return BoltResponse(status=401, body="")

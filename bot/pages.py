"""The page an alert's action link opens (``GET /a/{token}``) and its form (``POST /a/{token}``).

``GET`` and ``HEAD`` never change anything: SMS apps, link previews and security scanners fetch links by
themselves. The page holds a plain HTML form (no JavaScript) with the link's anti-forgery token and a large
**Acknowledge** button (and **Resolve** where the alert's rule resolves alerts); submitting it acknowledges (or
resolves) the alert as the phone the link was texted to. An unknown,
expired or used-up token is a bare 404, whatever the method; a form without the page's token is a 403; both say
nothing about why. Each token and each client address may ask ``PER_MINUTE`` times a minute (429 beyond).

The page is small, readable on a phone and accessible: a language, a title, one heading, a description list, a
labelled button at least 48 px high, contrast above 7:1, and a visible focus ring.
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bot.domain.links import PATH, is_token
from bot.sending.intake import NotRecorded
from bot.sending.links import ActionLinks, AlertState, LinkView

PER_MINUTE = 30  # requests a minute per token, and per client address
FORM_BYTES = 1024  # a form is a token and a button: anything longer is not ours
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the path: never sent on to another site
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}

_STYLE = """
body{margin:0;font:18px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#fff}
main{max-width:34rem;margin:0 auto;padding:1.25rem}
h1{font-size:1.35rem;line-height:1.3;margin:0 0 1rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:0 0 1.5rem}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.state{font-weight:700}.firing{color:#a00000}.acknowledged{color:#0a5c0a}
button{display:block;width:100%;min-height:48px;padding:.8rem 1rem;font:inherit;font-size:1.2rem;font-weight:700;
color:#fff;background:#0b4aa2;border:0;border-radius:.5rem;cursor:pointer}
button:focus-visible{outline:3px solid #111;outline-offset:3px}
button.second{margin-top:1rem;color:#0b4aa2;background:#fff;border:2px solid #0b4aa2}
p.note{padding:.75rem 1rem;background:#eef6ee;border-left:4px solid #0a5c0a}
"""


class RateLimit:
    """At most ``limit`` requests a minute per key (a token, an address): sliding, in this process's memory. A
    refused request adds nothing (a flood costs no memory), and keys quiet for a minute are forgotten."""

    def __init__(self, limit: int = PER_MINUTE, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def over(self, key: str) -> bool:
        window = self._seen.get(key)
        if window is None:
            return False
        now = self._clock()
        while window and now - window[0] >= 60:
            window.popleft()
        return len(window) >= self._limit

    def count(self, key: str) -> None:
        now = self._clock()
        if len(self._seen) > 10_000:  # forget quiet keys rather than grow without bound
            self._seen = {k: q for k, q in self._seen.items() if q and now - q[-1] < 60}
        self._seen.setdefault(key, deque()).append(now)

    def allows(self, *keys: str) -> bool:
        """Whether none of ``keys`` is over its limit; if so, this request counts against each."""
        if any(self.over(key) for key in keys):
            return False
        for key in keys:
            self.count(key)
        return True


def _page(view: LinkView) -> str:
    esc = html.escape
    when = view.posted_at.strftime("%Y-%m-%d %H:%M UTC")
    state = {
        AlertState.FIRING: "Firing: nobody has acknowledged it yet",
        AlertState.ACKNOWLEDGED: "Acknowledged",
        AlertState.RESOLVED: "Resolved",
    }[view.state]
    rows = [
        ("Came in", f'<time datetime="{view.posted_at.isoformat()}">{esc(when)}</time>'),
        ("State", f'<span class="state {view.state.value}">{esc(state)}</span>'),
    ]
    if view.acknowledged_by:
        rows.append(("Acknowledged by", esc(view.acknowledged_by)))
    rows.append(("Texted to", esc(view.phone)))
    listing = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    buttons = []
    if view.state is AlertState.FIRING:
        buttons.append('<button type="submit" name="action" value="acknowledge">Acknowledge</button>')
    if view.resolvable and view.state is not AlertState.RESOLVED:
        buttons.append('<button type="submit" name="action" value="resolve" class="second">Resolve</button>')
    action = f'<p class="note" role="status">{_DONE[view.state]}</p>' if view.just_now else ""
    if buttons:
        action += (
            '<form method="post" action="">'
            f'<input type="hidden" name="form_token" value="{esc(view.form_token)}">{"".join(buttons)}</form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>Alert: {esc(view.title)}</title><style>{_STYLE}</style></head>'
        f"<body><main><h1>{esc(view.title)}</h1><dl>{listing}</dl>{action}</main></body></html>"
    )


_DONE = {
    AlertState.ACKNOWLEDGED: "Acknowledged. The alert's Slack thread says so; nobody else is paged.",
    AlertState.RESOLVED: "Resolved. RESOLVED goes to the phones it reached, and the alert's Slack thread says so.",
    AlertState.FIRING: "",
}


def _not_found() -> Response:
    return Response("Not found", status_code=404, media_type="text/plain", headers=HEADERS)


def action_routes(links: ActionLinks, limit: RateLimit | None = None, failures: RateLimit | None = None) -> list[Route]:
    """``GET``/``HEAD``/``POST`` ``/a/{token}``. ``limit``: asks per token; ``failures``: unknown tokens and forged
    forms per client address (only failures: behind a proxy every phone may share one address)."""
    per_token, per_address = limit or RateLimit(), failures or RateLimit()

    def address(request: Request) -> str:
        return "a:" + (request.client.host if request.client else "unknown")

    def failed(request: Request, response: Response) -> Response:
        per_address.count(address(request))
        return response

    def limited(request: Request, token: str) -> Response | None:
        if per_address.over(address(request)) or (is_token(token) and per_token.over(f"t:{token}")):
            return Response("Too many requests", status_code=429, headers={**HEADERS, "Retry-After": "60"})
        if not is_token(token):  # not even a token's shape: no look-up
            return failed(request, _not_found())
        per_token.count(f"t:{token}")
        return None

    async def show(request: Request) -> Response:
        token = request.path_params["token"]
        if (refused := limited(request, token)) is not None:
            return refused
        view = await links.view(token)
        if view is None:
            return failed(request, _not_found())
        return HTMLResponse(_page(view), headers=HEADERS)

    async def act(request: Request) -> Response:
        token = request.path_params["token"]
        if (refused := limited(request, token)) is not None:
            return refused
        body = await request.body()
        if len(body) > FORM_BYTES:
            return Response("Bad request", status_code=400, media_type="text/plain", headers=HEADERS)
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=5)
        except ValueError:  # more fields than a form of ours has
            return Response("Bad request", status_code=400, media_type="text/plain", headers=HEADERS)
        form_token = (fields.get("form_token") or [""])[0]
        action = (fields.get("action") or ["acknowledge"])[0]
        if (await links.view(token)) is None:
            return failed(request, _not_found())
        try:
            view = await (links.resolve if action == "resolve" else links.acknowledge)(token, form_token)
        except NotRecorded:
            headers = {**HEADERS, "Retry-After": "30"}
            return Response("Not recorded, try again", status_code=503, media_type="text/plain", headers=headers)
        if view is None:  # the link is valid (just asked): the form is not the page's own, or it cannot resolve
            return failed(request, Response("Forbidden", status_code=403, media_type="text/plain", headers=HEADERS))
        return HTMLResponse(_page(view), headers=HEADERS)

    return [
        Route(PATH + "{token}", show, methods=["GET", "HEAD"]),
        Route(PATH + "{token}", act, methods=["POST"]),
    ]

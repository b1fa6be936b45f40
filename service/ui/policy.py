"""A Content-Security-Policy on the pages for people (/docs, /redoc, /ui): the browser loads nothing from another host.

The assets are all served by the app, so this changes nothing for the pages except what would leak out: ReDoc's
bundle shows its vendor's logo from a CDN (an <img> that removes itself when it cannot load), and without this policy
every visit to /redoc asks that host for it. The dashboard gets the stricter policy (no inline script at all, no
framing, forms only to itself).
"""

from __future__ import annotations

DOCS = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
DOCS += "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
DASHBOARD = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


def policy_for(path: str) -> str | None:
    if path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        return DOCS
    if path == "/ui" or path.startswith("/ui/"):
        return DASHBOARD
    return None


class PagePolicyMiddleware:
    """Plain ASGI, like the latency middleware: the API's own routes pass straight through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        policy = policy_for(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return
        header = (b"content-security-policy", policy.encode())

        async def send_with_policy(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_policy)

"""The web pages' protections: security headers, the Origin check, CSRF tokens, staff sessions, login throttling.

What comes from libraries: trusted proxy headers are uvicorn's ``ProxyHeadersMiddleware`` (given only the
configured proxy addresses), the anonymous CSRF token is signed and dated with ``itsdangerous``, password
hashes are scrypt (``terminal.staff``).  What is written here, because no well-kept library is among the
project's dependencies for it: the header and Origin middlewares (a few lines of ASGI each), the
server-side session store and the failed-login counter (both PostgreSQL tables in :mod:`backoffice.db`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse

SESSION_COOKIE = "fp_session"
CSRF_COOKIE = "fp_csrf"
CSRF_FIELD = "csrf_token"

# Every page: no framing, no sniffing, no referrer to other sites (the opt-out page's address may carry a code;
# "no-referrer" would also make browsers send `Origin: null` on the pages' own forms); scripts and
# styles only from this origin or inline with this response's nonce; forms only to this origin; nothing cached.
CSP = ("default-src 'none'; script-src 'self' 'nonce-{n}'; style-src 'self' 'nonce-{n}'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
]


class SecurityHeaders:
    """Adds :data:`HEADERS` and the CSP to every response (the pages are staff pages, the opt-out status and
    the API: nothing of them is to stay in a browser's cache).  A fresh CSP nonce per response is left in
    ``request.state.csp_nonce`` for the templates' inline style and script."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {b"server", b"cache-control", b"pragma"}]
                headers += HEADERS + [(b"content-security-policy", CSP.format(n=nonce).encode())]
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def request_origin(scope) -> str:
    """This server's origin as the browser sees it: scheme (from a trusted proxy's X-Forwarded-Proto, when
    configured) and the Host header."""
    host = Headers(scope=scope).get("host", "")
    return f"{scope.get('scheme', 'http')}://{host}".lower()


class OriginCheck:
    """Every state-changing request must come from this origin: an ``Origin`` (or, without one, a
    ``Referer``) naming another site, or ``null``, is refused with 403.  A request with neither is not from a
    browser page (a browser sends Origin on every POST) and still needs its CSRF token where forms do."""

    SAFE = {"GET", "HEAD", "OPTIONS"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in self.SAFE:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is None and headers.get("referer"):
                u = urlsplit(headers["referer"])
                origin = f"{u.scheme}://{u.netloc}"
            if origin is not None and origin.lower() != request_origin(scope):
                resp = PlainTextResponse("refused: this form was sent from another site (Origin "
                                         f"{origin[:100]!r}); use the back office's own pages", status_code=403)
                return await resp(scope, receive, send)
        await self.app(scope, receive, send)


class AnonCsrf:
    """CSRF tokens for forms shown before a login (opt-out, login): a random value in an HttpOnly cookie,
    and in the form the same value signed and dated with the server's secret (itsdangerous); a post must
    bring both, matching, and not older than ``max_age_s``."""

    def __init__(self, secret: str, max_age_s: int = 4 * 3600):
        self.signer = URLSafeTimedSerializer(secret, salt="facepay-csrf")
        self.max_age_s = max_age_s

    def token(self, request) -> tuple[str, str | None]:
        """(token for the form, cookie value to set or None when the browser already has one)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = None
        if not cookie or len(cookie) > 100:
            cookie = fresh = secrets.token_urlsafe(24)
        return self.signer.dumps(cookie), fresh

    def valid(self, request, token: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not token:
            return False
        try:
            value = self.signer.loads(token, max_age=self.max_age_s)
        except BadSignature:
            return False
        return isinstance(value, str) and secrets.compare_digest(value, cookie)


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed within ``window_s``: per account (whoever tries it) and per client address.
    While either is reached, even the right password is refused."""

    per_account: int = 5
    per_client: int = 20
    window_s: float = 900.0


@dataclass(frozen=True)
class SessionLimits:
    idle_s: float = 1800.0     # a staff session ends after 30 minutes without a request
    max_s: float = 8 * 3600.0  # and 8 hours after its login, whatever happens


def csrf_refused() -> PlainTextResponse:
    return PlainTextResponse("refused: this form's security token is missing or out of date; reload the page "
                             "and send it again", status_code=403)

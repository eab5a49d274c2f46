"""The back office's web pages (Starlette + Jinja2, rendered on the server).

Public: the opt-out page (``/``) and ``POST /api/optout``, rate-limited per client address, answering
"received" and a revocation id whether or not the code exists; ``/optout/<id>`` and
``GET /api/revocations/<id>`` tell the shopper only whether the request is being carried out or done (never
which terminals exist, nor whether the code was real).
Staff (login throttled per account and per client, scrypt-hashed passwords, server-side sessions that logout
and a password change end): the dashboard (terminals, sales, opt-outs and their receipts), the mode change,
the password change.  Every POST passes the Origin check and needs its CSRF token (the JSON API needs
``Content-Type: application/json`` instead, which no cross-site form can send); every response carries the
security headers of :mod:`backoffice.websec`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from terminal.fleet.contract import MODES, code_hash
from terminal.money import format_amount
from terminal.staff import scrypt_hash, verify_pin

from . import db, websec
from .websec import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, LoginLimits, SessionLimits

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["money"] = lambda minor, currency: format_amount(int(minor), currency)
ONLINE_S = 60  # a terminal whose last heartbeat is older is shown as offline
OPTOUT_IN_PROGRESS = "Your request is being carried out."
OPTOUT_DONE = "Done: your request has been carried out."


def hash_password(password: str) -> str:
    """scrypt, in the same format terminal.staff.verify_pin checks."""
    return scrypt_hash(password)


class RateLimit:
    """At most ``count`` requests per ``window_s`` from one client address."""

    def __init__(self, count: int, window_s: float):
        self.count, self.window_s = count, window_s
        self.hits: dict[str, deque] = defaultdict(deque)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        q = self.hits[client]
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.count:
            return False
        q.append(now)
        return True


def make_app(bus, db_url: str, session_secret: str, optout_rate: tuple[int, float] = (10, 60.0), *,
             trusted_proxies: list[str] | tuple[str, ...] = (), login_limits: LoginLimits | None = None,
             session_limits: SessionLimits | None = None) -> Starlette:
    """``trusted_proxies``: the addresses (or networks) of reverse proxies whose ``X-Forwarded-For`` /
    ``X-Forwarded-Proto`` are believed; from any other client those headers are ignored."""
    limit = RateLimit(*optout_rate)
    login_limits = login_limits or LoginLimits()
    session_limits = session_limits or SessionLimits()
    anon_csrf = websec.AnonCsrf(session_secret)
    state = {"conn": None}
    lock = asyncio.Lock()
    dummy = hash_password(secrets.token_hex(8))  # verified against for unknown names: the same time either way

    async def conn():
        if state["conn"] is None or state["conn"].closed:
            state["conn"] = await db.connect(db_url)
        return state["conn"]

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "?"

    # -- sessions and forms -------------------------------------------------------------------------
    async def session(request: Request) -> tuple[str, str] | None:
        """(staff user, CSRF token) of the request's live server-side session, or None."""
        if not hasattr(request.state, "session"):
            token = request.cookies.get(SESSION_COOKIE)
            found = None
            if token and len(token) < 100:
                async with lock:
                    found = await db.session_of(await conn(), token, session_limits.idle_s, session_limits.max_s)
            request.state.session = found
        return request.state.session

    async def render(request: Request, template: str, ctx: dict, status_code: int = 200) -> Response:
        sess = await session(request)
        fresh = None
        if sess is not None:
            token = sess[1]
        else:
            token, fresh = anon_csrf.token(request)
        resp = TEMPLATES.TemplateResponse(request, template, {**ctx, "csrf_token": token,
                                                              "user": sess[0] if sess else None},
                                          status_code=status_code)
        if fresh is not None:
            resp.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return resp

    async def checked_form(request: Request):
        """The posted form if its CSRF token is right (the session's, or the signed anonymous one), else None."""
        form = await request.form()
        token = str(form.get(CSRF_FIELD, ""))
        sess = await session(request)
        ok = secrets.compare_digest(token, sess[1]) if sess is not None else anon_csrf.valid(request, token)
        return form if ok else None

    async def new_optout(request: Request, code: str) -> str | Response:
        if not limit.allow(client_of(request)):
            return JSONResponse({"error": "too many requests: try again in a minute"}, status_code=429)
        async with lock:
            c = await conn()
            async with c.transaction():
                rid = await db.revocation_for_code(c, code_hash(code))
        bus.kick.set()
        return rid

    # -- public -------------------------------------------------------------------------------------
    async def optout_page(request: Request):
        return await render(request, "optout.html", {})

    async def optout_form(request: Request):
        form = await checked_form(request)
        if form is None:
            return websec.csrf_refused()
        code = str(form.get("code", "")).strip()
        if not code:
            return await render(request, "optout.html", {"error": "Please type the code."}, status_code=400)
        rid = await new_optout(request, code)
        if isinstance(rid, Response):
            return await render(request, "optout.html",
                                {"error": "Too many requests from here: try again in a minute."}, status_code=429)
        return RedirectResponse(f"/optout/{rid}", status_code=303)

    async def revocation_status(rid: str) -> bool | None:
        async with lock:
            return await db.revocation_done(await conn(), rid)

    async def optout_status(request: Request):
        rid = request.path_params["rid"]
        done = await revocation_status(rid)
        if done is None:
            return Response("not found", status_code=404)
        return await render(request, "optout_status.html", {"rid": rid, "done": done})

    async def api_optout(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": 'send JSON {"code": "..."} with Content-Type: application/json'},
                                status_code=415)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not body["code"].strip():
            return JSONResponse({"error": 'send JSON {"code": "..."}'}, status_code=400)
        rid = await new_optout(request, body["code"])
        if isinstance(rid, Response):
            return rid
        return JSONResponse({"status": "received", "revocation_id": rid}, status_code=202)

    async def api_revocation(request: Request):
        done = await revocation_status(request.path_params["rid"])
        if done is None:
            return JSONResponse({"error": "no such request"}, status_code=404)
        return JSONResponse({"status": "done" if done else "in progress",
                             "message": OPTOUT_DONE if done else OPTOUT_IN_PROGRESS})

    # -- staff --------------------------------------------------------------------------------------
    async def staff(request: Request) -> str | None:
        sess = await session(request)
        return sess[0] if sess else None

    async def login_page(request: Request):
        if await staff(request):
            return RedirectResponse("/dashboard", status_code=303)
        notice = "Password changed: log in with the new one." if request.query_params.get("changed") else None
        return await render(request, "login.html", {"notice": notice})

    async def login(request: Request):
        form = await checked_form(request)
        if form is None:
            return websec.csrf_refused()
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        client = client_of(request)
        lim = login_limits
        async with lock:
            c = await conn()
            by_account, by_client = await db.login_failures(c, user, client, lim.window_s)
            throttled = by_account >= lim.per_account or by_client >= lim.per_client
            stored = None if throttled else await db.staff_password_hash(c, user)
        if throttled:  # not even the right password gets in; the password is not tried at all
            why = "for this account" if by_account >= lim.per_account else "from this address"
            return await render(request, "login.html", {
                "error": f"Too many failed logins {why}: wait {lim.window_s / 60:.0f} minutes before trying again."},
                status_code=429)
        ok = await asyncio.to_thread(verify_pin, password, stored or dummy)
        async with lock:
            c = await conn()
            if not (stored and ok):
                await db.record_login_failure(c, user, client, lim.window_s)
            else:
                await db.clear_login_failures(c, user)
                token, _ = await db.new_session(c, user)
        if not (stored and ok):
            return await render(request, "login.html", {"error": "Wrong name or password."}, status_code=401)
        old = request.cookies.get(SESSION_COOKIE)
        if old:  # whatever session the browser had before is ended, not reused
            async with lock:
                await db.end_session(await conn(), old)
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp

    async def logout(request: Request):
        if await checked_form(request) is None:
            return websec.csrf_refused()
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            async with lock:
                await db.end_session(await conn(), token)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    async def password_page(request: Request):
        if not await staff(request):
            return RedirectResponse("/login", status_code=303)
        return await render(request, "password.html", {})

    async def password_change(request: Request):
        user = await staff(request)
        if not user:
            return RedirectResponse("/login", status_code=303)
        form = await checked_form(request)
        if form is None:
            return websec.csrf_refused()
        current, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
        async with lock:
            stored = await db.staff_password_hash(await conn(), user)
        if not (stored and await asyncio.to_thread(verify_pin, current, stored)):
            return await render(request, "password.html", {"error": "The current password is wrong."}, 400)
        if len(new) < 10:
            return await render(request, "password.html", {"error": "The new password needs at least 10 characters."},
                                400)
        if new != again:
            return await render(request, "password.html", {"error": "The two new passwords differ."}, 400)
        hashed = await asyncio.to_thread(hash_password, new)
        async with lock:
            await db.change_password(await conn(), user, hashed)  # ends every session of this user, this one too
        resp = RedirectResponse("/login?changed=1", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    async def staff_home(request: Request):
        return RedirectResponse("/dashboard" if await staff(request) else "/login", status_code=303)

    async def dashboard(request: Request):
        if not await staff(request):
            return RedirectResponse("/login", status_code=303)
        async with lock:
            c = await conn()
            cur = await c.execute(
                "SELECT id, last_heartbeat, version, mode, wanted_mode, reader, camera, outbox_backlog, "
                "face_pay_paused, ledger_seq, ledger_flag, "
                "COALESCE(EXTRACT(EPOCH FROM now() - last_heartbeat) < %s, false), bad_revocations "
                "FROM terminals ORDER BY id",
                (ONLINE_S,))
            terminals = await cur.fetchall()
            cur = await c.execute(
                "SELECT terminal_id, (created_at AT TIME ZONE 'UTC')::date AS day, training, count(*), "
                "sum(amount_minor), min(currency) FROM sales WHERE status = 'approved' "
                "GROUP BY terminal_id, day, training ORDER BY day DESC, terminal_id, training")
            sales = await cur.fetchall()
            optouts = await db.recent_revocations(c)
        return await render(request, "dashboard.html", {
            "terminals": terminals, "sales": sales, "modes": MODES, "optouts": optouts})

    async def clear_flag(request: Request):
        """Staff accept a flagged terminal's ledger as it is now; face pay may resume there."""
        if not await staff(request):
            return RedirectResponse("/login", status_code=303)
        if await checked_form(request) is None:
            return websec.csrf_refused()
        tid = request.path_params["tid"]
        async with lock:
            found = await db.clear_ledger_flag(await conn(), tid)
        if not found:
            return Response("no such terminal", status_code=404)
        await bus.clear_hold(tid)
        return RedirectResponse("/dashboard", status_code=303)

    async def set_mode(request: Request):
        if not await staff(request):
            return RedirectResponse("/login", status_code=303)
        form = await checked_form(request)
        if form is None:
            return websec.csrf_refused()
        tid = request.path_params["tid"]
        mode = str(form.get("mode", ""))
        if mode not in MODES:
            return Response(f"unknown mode {mode!r}", status_code=400)
        async with lock:
            c = await conn()
            cur = await c.execute("UPDATE terminals SET wanted_mode = %s WHERE id = %s RETURNING id", (mode, tid))
            found = await cur.fetchone()
        if not found:
            return Response("no such terminal", status_code=404)
        await bus.set_mode(tid, mode)
        return RedirectResponse("/dashboard", status_code=303)

    async def api_terminals(request: Request):
        if not await staff(request):
            return JSONResponse({"error": "log in first"}, status_code=401)
        async with lock:
            cur = await (await conn()).execute("SELECT id, mode, wanted_mode, ledger_seq, ledger_flag FROM terminals")
            rows = await cur.fetchall()
        return JSONResponse({r[0]: {"mode": r[1], "wanted_mode": r[2], "ledger_seq": r[3], "ledger_flag": r[4]}
                             for r in rows})

    routes = [
        Route("/", optout_page), Route("/optout", optout_form, methods=["POST"]),
        Route("/optout/{rid}", optout_status),
        Route("/api/optout", api_optout, methods=["POST"]), Route("/api/revocations/{rid}", api_revocation),
        Route("/login", login_page), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]), Route("/dashboard", dashboard),
        Route("/staff", staff_home), Route("/staff/", staff_home),
        Route("/account/password", password_page), Route("/account/password", password_change, methods=["POST"]),
        Route("/terminals/{tid}/mode", set_mode, methods=["POST"]), Route("/api/terminals", api_terminals),
        Route("/terminals/{tid}/clear-flag", clear_flag, methods=["POST"]),
    ]
    middleware = [Middleware(websec.SecurityHeaders), Middleware(websec.OriginCheck)]
    if trusted_proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=list(trusted_proxies)))
    return Starlette(routes=routes, middleware=middleware)

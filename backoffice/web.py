"""The back office's web pages (Starlette + Jinja2, rendered on the server).

Public: the opt-out page (``/``) and ``POST /api/optout``, rate-limited per client address, answering
"received" and a revocation id whether or not the code exists; ``/optout/<id>`` and
``GET /api/revocations/<id>`` show each terminal's deletion receipt as it arrives.
Staff (login, scrypt-hashed passwords, signed session cookie): the dashboard and the mode change.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from terminal.config import TERMINAL_MODES
from terminal.fleet.link import code_hash
from terminal.money import format_amount
from terminal.staff import scrypt_hash, verify_pin

from . import db

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["money"] = lambda minor, currency: format_amount(int(minor), currency)
ONLINE_S = 60  # a terminal whose last heartbeat is older is shown as offline


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


def make_app(bus, db_url: str, session_secret: str, optout_rate: tuple[int, float] = (10, 60.0)) -> Starlette:
    limit = RateLimit(*optout_rate)
    state = {"conn": None}
    lock = asyncio.Lock()
    dummy = hash_password(secrets.token_hex(8))  # verified against for unknown names: the same time either way

    async def conn():
        if state["conn"] is None or state["conn"].closed:
            state["conn"] = await db.connect(db_url)
        return state["conn"]

    async def new_optout(request: Request, code: str) -> str | Response:
        client = request.client.host if request.client else "?"
        if not limit.allow(client):
            return JSONResponse({"error": "too many requests: try again in a minute"}, status_code=429)
        async with lock:
            c = await conn()
            async with c.transaction():
                rid = await db.revocation_for_code(c, code_hash(code))
        bus.kick.set()
        return rid

    # -- public -------------------------------------------------------------------------------------
    async def optout_page(request: Request):
        return TEMPLATES.TemplateResponse(request, "optout.html", {})

    async def optout_form(request: Request):
        form = await request.form()
        code = str(form.get("code", "")).strip()
        if not code:
            return TEMPLATES.TemplateResponse(request, "optout.html", {"error": "Please type the code."},
                                              status_code=400)
        rid = await new_optout(request, code)
        if isinstance(rid, Response):
            return TEMPLATES.TemplateResponse(request, "optout.html",
                                              {"error": "Too many requests from here: try again in a minute."},
                                              status_code=429)
        return RedirectResponse(f"/optout/{rid}", status_code=303)

    async def optout_status(request: Request):
        rid = request.path_params["rid"]
        async with lock:
            states = await db.revocation_states(await conn(), rid)
        if states is None:
            return Response("not found", status_code=404)
        return TEMPLATES.TemplateResponse(request, "optout_status.html", {"rid": rid, "states": states})

    async def api_optout(request: Request):
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
        async with lock:
            states = await db.revocation_states(await conn(), request.path_params["rid"])
        if states is None:
            return JSONResponse({"error": "no such revocation"}, status_code=404)
        return JSONResponse({"terminals": states})

    # -- staff --------------------------------------------------------------------------------------
    def staff(request: Request) -> str | None:
        return request.session.get("staff")

    async def login_page(request: Request):
        return TEMPLATES.TemplateResponse(request, "login.html", {})

    async def login(request: Request):
        form = await request.form()
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        async with lock:
            cur = await (await conn()).execute("SELECT password_hash FROM staff WHERE username = %s", (user,))
            row = await cur.fetchone()
        ok = await asyncio.to_thread(verify_pin, password, row[0] if row else dummy)
        if not (row and ok):
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": "Wrong name or password."},
                                              status_code=401)
        request.session.clear()
        request.session["staff"] = user
        return RedirectResponse("/dashboard", status_code=303)

    async def logout(request: Request):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def dashboard(request: Request):
        if not staff(request):
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
            optouts = await db.terminal_optouts(c)
        return TEMPLATES.TemplateResponse(request, "dashboard.html", {
            "user": staff(request), "terminals": terminals, "sales": sales, "modes": TERMINAL_MODES,
            "optouts": optouts})

    async def clear_flag(request: Request):
        """Staff accept a flagged terminal's ledger as it is now; face pay may resume there."""
        if not staff(request):
            return RedirectResponse("/login", status_code=303)
        tid = request.path_params["tid"]
        async with lock:
            found = await db.clear_ledger_flag(await conn(), tid)
        if not found:
            return Response("no such terminal", status_code=404)
        await bus.clear_hold(tid)
        return RedirectResponse("/dashboard", status_code=303)

    async def set_mode(request: Request):
        if not staff(request):
            return RedirectResponse("/login", status_code=303)
        tid = request.path_params["tid"]
        mode = str((await request.form()).get("mode", ""))
        if mode not in TERMINAL_MODES:
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
        if not staff(request):
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
        Route("/terminals/{tid}/mode", set_mode, methods=["POST"]), Route("/api/terminals", api_terminals),
        Route("/terminals/{tid}/clear-flag", clear_flag, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[
        Middleware(SessionMiddleware, secret_key=session_secret, same_site="strict", max_age=8 * 3600)])

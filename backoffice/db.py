"""The back office's PostgreSQL schema, created and migrated by the back office itself, and its queries.

Each migration runs once, in its own transaction, recorded in ``schema_migrations``.
"""

from __future__ import annotations

import json
import secrets

import psycopg

from terminal.fleet import contract as c
from terminal.fleet.contract import HEX64, RECEIPT_STATES, new_revocation_id

MIGRATIONS = [
    # 1: the first schema
    """
    CREATE TABLE terminals (
        id text PRIMARY KEY,
        provisioned_at timestamptz NOT NULL DEFAULT now(),
        last_heartbeat timestamptz,
        version text, mode text, wanted_mode text, reader text, camera text,
        outbox_backlog integer, face_pay_paused boolean,
        ledger_seq bigint NOT NULL DEFAULT 0,
        ledger_mac text NOT NULL DEFAULT '',
        ledger_flag text
    );
    CREATE TABLE events (
        id text PRIMARY KEY,
        terminal_id text NOT NULL,
        kind text NOT NULL,
        payload jsonb NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sales (
        sale_id text PRIMARY KEY,
        terminal_id text NOT NULL,
        created_at timestamptz NOT NULL,
        amount_minor bigint NOT NULL,
        currency text NOT NULL,
        method text NOT NULL,
        training boolean NOT NULL,
        status text NOT NULL
    );
    CREATE INDEX sales_terminal_day ON sales (terminal_id, created_at);
    CREATE TABLE optout_codes (
        code_hash text PRIMARY KEY,
        card_hash text NOT NULL,
        terminal_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE revocations (
        id text PRIMARY KEY,
        card_hash text NOT NULL,
        source text NOT NULL,
        requested_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    );
    CREATE TABLE revocation_states (
        revocation_id text NOT NULL REFERENCES revocations(id),
        terminal_id text NOT NULL,
        state text NOT NULL CHECK (state IN ('pending', 'deleted', 'none-held')),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (revocation_id, terminal_id)
    );
    CREATE TABLE staff (
        username text PRIMARY KEY,
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
    """,
    # 2: issue 19: rows keyed by (terminal_id, id); terminal opt-outs rate-limited; every ledger head kept
    """
    ALTER TABLE sales DROP CONSTRAINT sales_pkey;
    ALTER TABLE sales ADD PRIMARY KEY (terminal_id, sale_id);
    ALTER TABLE optout_codes DROP CONSTRAINT optout_codes_pkey;
    ALTER TABLE optout_codes ADD PRIMARY KEY (terminal_id, code_hash);
    CREATE INDEX optout_codes_code ON optout_codes (code_hash);
    ALTER TABLE revocations ADD COLUMN source_terminal text;
    ALTER TABLE revocations ADD COLUMN not_before timestamptz NOT NULL DEFAULT now();
    CREATE INDEX revocations_source ON revocations (source_terminal, requested_at);
    ALTER TABLE terminals ADD COLUMN bad_revocations bigint NOT NULL DEFAULT 0;
    ALTER TABLE terminals ADD COLUMN ledger_epoch integer NOT NULL DEFAULT 0;
    CREATE TABLE ledger_seen (
        terminal_id text NOT NULL,
        epoch integer NOT NULL,
        seq bigint NOT NULL,
        mac text NOT NULL,
        source text NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (terminal_id, epoch, seq, mac)
    );
    """,
]

# A sale's status only moves forward: pending -> approved / declined / unknown -> voided / refunded
# (an unknown outcome may still resolve to approved or declined).  Anything else is refused.
SALE_STATUSES = ("pending", "approved", "declined", "unknown", "voided", "refunded")
SALE_NEXT = {"pending": {"approved", "declined", "unknown"}, "unknown": {"approved", "declined"},
             "approved": {"voided", "refunded"}, "declined": set(), "voided": set(), "refunded": set()}
_SALE_MOVES = " OR ".join(f"(sales.status = '{a}' AND excluded.status = '{b}')"
                          for a, nexts in SALE_NEXT.items() for b in sorted(nexts))


async def connect(url: str) -> psycopg.AsyncConnection:
    """An autocommit connection, as the bus and the web pages use."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def migrate(url: str) -> int:
    """Bring the schema up to date; returns the version now in force."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("SELECT pg_advisory_lock(7341)")  # two back offices starting together migrate once
        try:
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            migrate_web(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7341)")
    return len(MIGRATIONS)


def session_secret(conn: psycopg.Connection) -> str:
    conn.execute("INSERT INTO settings (key, value) VALUES ('session_secret', %s) ON CONFLICT DO NOTHING",
                 (secrets.token_hex(32),))
    return conn.execute("SELECT value FROM settings WHERE key = 'session_secret'").fetchone()[0]


def add_terminal(url: str, tid: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO terminals (id) VALUES (%s) ON CONFLICT DO NOTHING", (tid,))


def set_staff(url: str, username: str, password_hash: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO staff (username, password_hash) VALUES (%s, %s) "
                     "ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash",
                     (username, password_hash))
        conn.execute("DELETE FROM web_sessions WHERE username = %s", (username,))  # a new password ends them


# -- ingest: each event stored once by id; its effect applied only when it was new --------------------
async def store_event(conn: psycopg.AsyncConnection, event_id: str, tid: str, kind: str, ev: dict) -> bool:
    cur = await conn.execute("INSERT INTO events (id, terminal_id, kind, payload) VALUES (%s,%s,%s,%s) "
                             "ON CONFLICT (id) DO NOTHING RETURNING id", (event_id, tid, kind, json.dumps(ev)))
    return await cur.fetchone() is not None


def _hex64(value) -> str:
    if not (isinstance(value, str) and HEX64.fullmatch(value)):
        raise ValueError(f"not a 64-digit hash: {value!r}")
    return value


async def apply_event(conn: psycopg.AsyncConnection, tid: str, kind: str, ev: dict,
                      terminal_rate: tuple[int, float] = (10, 3600.0)) -> str | None:
    """The effect of one new event from terminal ``tid`` (always the subject's, never the payload's).

    Returns a revocation id for an opt-out, a flag for a ledger entry that rewrites one already seen."""
    if kind == c.SALE:
        if ev["status"] not in SALE_STATUSES:
            raise ValueError(f"unknown sale status {ev['status']!r}")
        await conn.execute(
            "INSERT INTO sales (sale_id, terminal_id, created_at, amount_minor, currency, method, training, status) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (terminal_id, sale_id) DO UPDATE SET status = excluded.status "
            f"WHERE {_SALE_MOVES}",
            (str(ev["sale_id"]), tid, ev["created_at"], int(ev["amount_minor"]), ev["currency"], ev["method"],
             bool(ev["training"]), ev["status"]))
    elif kind == c.ENROL:
        await conn.execute("INSERT INTO optout_codes (code_hash, card_hash, terminal_id) VALUES (%s,%s,%s) "
                           "ON CONFLICT DO NOTHING", (_hex64(ev["code_hash"]), _hex64(ev["card_hash"]), tid))
    elif kind == c.OPTOUT:
        return await terminal_optout(conn, tid, _hex64(ev["card_hash"]), terminal_rate)
    elif kind == c.RECEIPT:
        if ev["state"] not in RECEIPT_STATES:
            raise ValueError(f"unknown receipt state {ev['state']!r}")
        await conn.execute("UPDATE revocation_states SET state = %s, updated_at = now() "
                           "WHERE revocation_id = %s AND terminal_id = %s AND state = 'pending'",
                           (ev["state"], str(ev["revocation_id"]), tid))
    elif kind == c.LEDGER:
        return await ledger_seen(conn, tid, int(ev["seq"]), str(ev["mac"]), "ledger event")
    return None


async def terminal_optout(conn, tid: str, card_hash: str, rate: tuple[int, float]) -> str:
    """An opt-out made at terminal ``tid``: a revocation like any other, but at most ``rate`` = (count, window)
    per terminal go out per window; the rest wait their turn (``not_before``), shown on the dashboard.
    The sender is ``pending`` like every terminal until its own receipt says ``deleted``."""
    count, window = rate
    cur = await conn.execute(
        "SELECT not_before FROM revocations WHERE source_terminal = %s ORDER BY not_before DESC LIMIT 1 OFFSET %s",
        (tid, count - 1))
    row = await cur.fetchone()
    rid = await create_revocation(conn, card_hash, f"terminal {tid}")
    if row is not None:  # the count-th latest slot: this one goes out a window after it at the earliest
        await conn.execute("UPDATE revocations SET source_terminal = %s, "
                           "not_before = GREATEST(now(), %s + make_interval(secs => %s)) WHERE id = %s",
                           (tid, row[0], window, rid))
    else:
        await conn.execute("UPDATE revocations SET source_terminal = %s WHERE id = %s", (tid, rid))
    return rid


async def ledger_seen(conn, tid: str, seq: int, mac: str, source: str) -> str | None:
    """Keep every (seq, MAC) a terminal reported; a second MAC for a seq already seen (in this epoch, i.e.
    since staff last cleared a flag) means its chain does not extend what the back office saw: flag it."""
    cur = await conn.execute("SELECT ledger_epoch, ledger_flag FROM terminals WHERE id = %s FOR UPDATE", (tid,))
    row = await cur.fetchone()
    if row is None:
        return None
    epoch, flagged = row
    cur = await conn.execute("SELECT mac, first_seen FROM ledger_seen WHERE terminal_id = %s AND epoch = %s "
                             "AND seq = %s AND mac <> %s ORDER BY first_seen LIMIT 1", (tid, epoch, seq, mac))
    other = await cur.fetchone()
    await conn.execute("INSERT INTO ledger_seen (terminal_id, epoch, seq, mac, source) VALUES (%s,%s,%s,%s,%s) "
                       "ON CONFLICT DO NOTHING", (tid, epoch, seq, mac, source))
    if other is None:
        return None
    flag = (f"ledger rolled back: entry {seq} ({source}) is not the entry {seq} seen "
            f"{other[1].strftime('%Y-%m-%d %H:%M:%S UTC')}")
    if not flagged:
        await conn.execute("UPDATE terminals SET ledger_flag = %s WHERE id = %s", (flag, tid))
    return flag


async def clear_ledger_flag(conn, tid: str) -> bool:
    """Staff accept the terminal's chain as it is now: a new epoch starts from its next report."""
    cur = await conn.execute("UPDATE terminals SET ledger_flag = NULL, ledger_epoch = ledger_epoch + 1, "
                             "ledger_seq = 0, ledger_mac = '' WHERE id = %s RETURNING id", (tid,))
    return await cur.fetchone() is not None


async def heartbeat(conn: psycopg.AsyncConnection, tid: str, hb: dict) -> str | None:
    """Health, and the ledger head anchor: every reported (seq, MAC) is kept; a head that goes backwards
    (an old copy restored) or a chain that does not pass through a head already seen is flagged.
    Returns the terminal's flag while it stands (the bus pauses face pay there)."""
    cur = await conn.execute("SELECT ledger_seq, ledger_mac, ledger_flag FROM terminals WHERE id = %s FOR UPDATE",
                             (tid,))
    row = await cur.fetchone()
    if row is None:
        return None
    seq, mac = int(hb["ledger_head"]["seq"]), str(hb["ledger_head"]["mac"])
    flag = None
    if seq < row[0]:
        flag = f"ledger rolled back: head went back from {row[0]} to {seq}"
    elif seq > 0:
        flag = await ledger_seen(conn, tid, seq, mac, "heartbeat")
    await conn.execute(
        "UPDATE terminals SET last_heartbeat = now(), version = %s, mode = %s, reader = %s, camera = %s, "
        "outbox_backlog = %s, face_pay_paused = %s, ledger_seq = GREATEST(ledger_seq, %s), "
        "ledger_mac = CASE WHEN %s >= ledger_seq THEN %s ELSE ledger_mac END, "
        "bad_revocations = GREATEST(bad_revocations, %s), "
        "ledger_flag = COALESCE(ledger_flag, %s) WHERE id = %s",
        (hb.get("version"), hb.get("mode"), hb.get("reader"), hb.get("camera"), hb.get("outbox_backlog"),
         hb.get("face_pay_paused"), seq, seq, mac, int(hb.get("bad_revocations") or 0), flag, tid))
    return row[2] or flag


# -- revocations ----------------------------------------------------------------------------------
async def create_revocation(conn: psycopg.AsyncConnection, card_hash: str, source: str) -> str:
    rid = new_revocation_id()
    await conn.execute("INSERT INTO revocations (id, card_hash, source) VALUES (%s,%s,%s)", (rid, card_hash, source))
    await conn.execute("INSERT INTO revocation_states (revocation_id, terminal_id, state) "
                       "SELECT %s, id, 'pending' FROM terminals", (rid,))
    return rid


async def revocation_for_code(conn: psycopg.AsyncConnection, code_hash: str) -> str:
    """A revocation for an opt-out code.  An unknown code gets one too, for a card no terminal holds,
    so the answer and what follows look the same: nobody learns whether a code exists."""
    cur = await conn.execute("SELECT card_hash FROM optout_codes WHERE code_hash = %s ORDER BY created_at LIMIT 1",
                             (code_hash,))
    row = await cur.fetchone()
    card_hash = row[0] if row else secrets.token_hex(32)
    return await create_revocation(conn, card_hash, "opt-out code")


async def revocation_states(conn: psycopg.AsyncConnection, rid: str) -> dict | None:
    cur = await conn.execute("SELECT 1 FROM revocations WHERE id = %s", (rid,))
    if await cur.fetchone() is None:
        return None
    cur = await conn.execute("SELECT terminal_id, state FROM revocation_states WHERE revocation_id = %s "
                             "ORDER BY terminal_id", (rid,))
    return {tid: state for tid, state in await cur.fetchall()}


async def unpublished(conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
    cur = await conn.execute("SELECT id, card_hash FROM revocations WHERE published_at IS NULL AND not_before <= now() "
                             "ORDER BY requested_at")
    return await cur.fetchall()


# -- the web pages' own tables: server-side staff sessions and failed logins ---------------------------
# Kept apart from MIGRATIONS (idempotent, run by migrate() under its lock) so the web's schema and the
# fleet's numbered migrations can change independently.
WEB_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash text PRIMARY KEY,
    username text NOT NULL REFERENCES staff(username) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (username);
CREATE TABLE IF NOT EXISTS login_failures (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    client text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (username, at);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures (client, at);
"""


def migrate_web(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(WEB_SCHEMA)


def _token_hash(token: str) -> str:
    """Sessions are stored by a hash of their cookie: a database dump holds no live session."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


async def new_session(conn: psycopg.AsyncConnection, username: str) -> tuple[str, str]:
    """A fresh session for a staff user who just logged in: (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO web_sessions (token_hash, username, csrf_token) VALUES (%s,%s,%s)",
                       (_token_hash(token), username, csrf))
    return token, csrf


async def session_of(conn: psycopg.AsyncConnection, token: str, idle_s: float, max_s: float) -> tuple[str, str] | None:
    """(username, CSRF token) of a live session, marking it seen; an idle or too old one is ended here."""
    th = _token_hash(token)
    cur = await conn.execute(
        "UPDATE web_sessions SET seen_at = now() WHERE token_hash = %s "
        "AND seen_at > now() - make_interval(secs => %s) AND created_at > now() - make_interval(secs => %s) "
        "RETURNING username, csrf_token", (th, idle_s, max_s))
    row = await cur.fetchone()
    if row is None:
        await conn.execute("DELETE FROM web_sessions WHERE token_hash = %s", (th,))
    return (row[0], row[1]) if row else None


async def end_session(conn: psycopg.AsyncConnection, token: str) -> None:
    await conn.execute("DELETE FROM web_sessions WHERE token_hash = %s", (_token_hash(token),))


async def staff_password_hash(conn: psycopg.AsyncConnection, username: str) -> str | None:
    cur = await conn.execute("SELECT password_hash FROM staff WHERE username = %s", (username,))
    row = await cur.fetchone()
    return row[0] if row else None


async def change_password(conn: psycopg.AsyncConnection, username: str, password_hash: str) -> None:
    """A new password, and every session of that user ended, in one transaction."""
    async with conn.transaction():
        await conn.execute("UPDATE staff SET password_hash = %s WHERE username = %s", (password_hash, username))
        await conn.execute("DELETE FROM web_sessions WHERE username = %s", (username,))


async def login_failures(conn: psycopg.AsyncConnection, username: str, client: str,
                         window_s: float) -> tuple[int, int]:
    """Failed logins within the window: (for this account, from this client)."""
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE username = %s), count(*) FILTER (WHERE client = %s) FROM login_failures "
        "WHERE at > now() - make_interval(secs => %s) AND (username = %s OR client = %s)",
        (username, client, window_s, username, client))
    row = await cur.fetchone()
    return int(row[0]), int(row[1])


async def record_login_failure(conn: psycopg.AsyncConnection, username: str, client: str, keep_s: float) -> None:
    await conn.execute("INSERT INTO login_failures (username, client) VALUES (%s, %s)", (username[:200], client))
    await conn.execute("DELETE FROM login_failures WHERE at < now() - make_interval(secs => %s)", (keep_s,))


async def clear_login_failures(conn: psycopg.AsyncConnection, username: str) -> None:
    await conn.execute("DELETE FROM login_failures WHERE username = %s", (username,))


async def revocation_done(conn: psycopg.AsyncConnection, rid: str) -> bool | None:
    """What the shopper may learn: None (no such request), False (being carried out), True (done).

    Done when every terminal has answered; whether one held anything for this card is not said, so a real
    code and a made-up one look the same."""
    cur = await conn.execute("SELECT count(*) FILTER (WHERE s.state = 'pending') FROM revocations r "
                             "LEFT JOIN revocation_states s ON s.revocation_id = r.id WHERE r.id = %s "
                             "GROUP BY r.id", (rid,))
    row = await cur.fetchone()
    return None if row is None else row[0] == 0


async def recent_revocations(conn: psycopg.AsyncConnection, limit: int = 50) -> list[dict]:
    """For the staff dashboard: the latest opt-outs, where each came from (``source_terminal``: the terminal
    that started it, None for an opt-out code), when it went out or until when it waits (a terminal's rate
    limit: ``not_before``), and every terminal's receipt."""
    cur = await conn.execute(
        "SELECT r.id, r.requested_at, r.source, r.published_at, "
        "COALESCE(json_object_agg(s.terminal_id, s.state ORDER BY s.terminal_id) "
        "FILTER (WHERE s.terminal_id IS NOT NULL), '{}'), r.source_terminal, r.not_before "
        "FROM revocations r LEFT JOIN revocation_states s ON s.revocation_id = r.id "
        "GROUP BY r.id ORDER BY r.requested_at DESC LIMIT %s", (limit,))
    return [{"id": r[0], "requested_at": r[1], "source": r[2], "published_at": r[3],
             "receipts": r[4] if isinstance(r[4], dict) else json.loads(r[4]),
             "source_terminal": r[5], "not_before": r[6]} for r in await cur.fetchall()]

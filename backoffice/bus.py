"""The back office on NATS JetStream: the streams, per-terminal provisioning, ingest and revocation publishing.

Streams (all file storage):

- ``REVOCATIONS`` ``facepay.revocations``: every opt-out, to every terminal; no delete, no purge.
- ``SALES`` ``facepay.t.*.sale``: settled sales from the terminals' outboxes.
- ``CONSENT`` ``facepay.t.*.{ledger,enrol,optout,receipt}``: consent ledger events, enrolment links,
  opt-outs made at a terminal and deletion receipts; no delete, no purge.
- ``HEARTBEATS`` ``facepay.t.*.hb``: kept one hour.
- ``REVOKED`` ``facepay.revoked.<card hash>``: the fleet's revoked card hashes, one (signed) message per
  card (a compacted view of REVOCATIONS); agents read it whole at every start and reconnect.

Every stream lives in the NATS account ``BACKOFFICE``; terminals reach them only through the services
that account exports (see natsconf.py).  Every revocation is signed with the back office's Ed25519 key.

Per terminal: a durable pull consumer ``rev_<id>`` on REVOCATIONS and a key-value bucket ``fleet_<id>``.
Every one of these names is written once, in ``terminal/fleet/contract.py``, which the agents import too.
Every publish carries ``Nats-Msg-Id`` (duplicate window 10 minutes) and the back office stores each event
once by that id besides, so retries past the window change nothing either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import nats
import psycopg
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from terminal.fleet import contract as c
from terminal.fleet.contract import unsubscribe_quietly

from . import db

_log = logging.getLogger("facepay.backoffice")

DUP_WINDOW_S = 600.0
STALL_S = 5.0  # fetches that bring nothing this long while the consumer has events waiting: subscribe again
_KEPT = dict(deny_delete=True, deny_purge=True)  # no delete, no purge
STREAM_LIMITS = {
    c.REVOCATIONS_STREAM: _KEPT,
    c.SALES_STREAM: {},
    c.CONSENT_STREAM: _KEPT,
    c.HEARTBEATS_STREAM: dict(max_age=3600.0, max_msgs_per_subject=100),
    c.REVOKED_STREAM: dict(max_msgs_per_subject=1, **_KEPT),
}
STREAMS = {name: dict(subjects=subjects, **STREAM_LIMITS[name]) for name, subjects in c.STREAM_SUBJECTS.items()}
INGESTED = (c.SALES_STREAM, c.CONSENT_STREAM, c.HEARTBEATS_STREAM)


async def ensure_streams(js) -> None:
    for name, params in STREAMS.items():
        cfg = api.StreamConfig(name=name, storage=api.StorageType.FILE, duplicate_window=DUP_WINDOW_S, **params)
        try:
            await js.add_stream(cfg)
        except BadRequestError:
            await js.update_stream(cfg)


async def provision_terminal(nats_url: str, tid: str, tls=None, timeout: float = 30.0) -> None:
    """The terminal's consumer of the revocation stream (from now on) and its key-value bucket.

    For a moment after each config reload (another terminal being provisioned) JetStream does not answer
    (no responders, or no answer in time): the whole step is made again until it does."""
    async def retried(exc):  # a connection cut by the server's config reload (provision's SIGHUP) is retried
        _log.debug("provisioning %s: connection attempt failed, retrying: %r", tid, exc)

    deadline = time.monotonic() + timeout
    while True:
        # without error_cb nats-py logs each such attempt with a traceback (`make fleet-demo` printed three)
        nc = await nats.connect(nats_url, connect_timeout=5, tls=tls, error_cb=retried)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            try:
                await js.consumer_info(c.REVOCATIONS_STREAM, c.revocation_consumer(tid))
            except NotFoundError:
                await js.add_consumer(c.REVOCATIONS_STREAM, api.ConsumerConfig(
                    durable_name=c.revocation_consumer(tid), ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.NEW, ack_wait=10.0, max_ack_pending=1000))
            await js.create_key_value(bucket=c.kv_bucket(tid), history=5)
            return
        except (ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await nc.close()


class Bus:
    """Ingest from the terminal streams into PostgreSQL, publish revocations, set terminal modes."""

    def __init__(self, nats_url: str, db_url: str, *, signing_key, tls=None,
                 terminal_rate: tuple[int, float] = (10, 3600.0)):
        self.nats_url = nats_url
        self.db_url = db_url
        self.signing_key = signing_key
        self.tls = tls
        self.terminal_rate = terminal_rate
        self.nc = None
        self.js = None
        self.kick = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    async def start(self) -> None:
        async def error_cb(exc):
            _log.warning("nats: %s", exc)

        async def disconnected_cb():
            _log.warning("nats: disconnected")

        async def reconnected_cb():
            url = self.nc.connected_url
            _log.warning("nats: connected again to %s:%s", url.hostname, url.port)  # not netloc: it holds the password

        self.nc = await nats.connect(self.nats_url, name="facepay-backoffice", max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.5, connect_timeout=10,  # see fleet_agent.CONNECT_TIMEOUT_S
                                     error_cb=error_cb, tls=self.tls,
                                     disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb)
        self.js = self.nc.jetstream(timeout=5)
        await ensure_streams(self.js)
        for stream in INGESTED:
            try:
                await self.js.consumer_info(stream, c.BACKOFFICE_CONSUMER)
            except NotFoundError:
                await self.js.add_consumer(stream, api.ConsumerConfig(
                    durable_name=c.BACKOFFICE_CONSUMER, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0,
                    max_ack_pending=20000))
            self._tasks.append(asyncio.create_task(self._ingest(stream)))
        self._tasks.append(asyncio.create_task(self._publish_revocations()))

    async def stop(self) -> None:
        self._stopping = True  # loops end even where the client turns a cancellation into a timeout
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.nc is not None:  # not wait_for: nats-py's close() can swallow the cancellation (fleet_agent.py)
            await asyncio.wait({asyncio.ensure_future(self.nc.close())}, timeout=3)

    async def _ingest(self, stream: str) -> None:
        conn = await db.connect(self.db_url)
        sub = None
        heard = time.monotonic()  # when a fetch last brought something (or the stream was seen empty)
        while not self._stopping:
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=c.BACKOFFICE_CONSUMER, stream=stream)
                try:
                    msgs = await sub.fetch(batch=500, timeout=1.0)
                except TimeoutError:
                    if time.monotonic() - heard >= STALL_S:
                        heard = time.monotonic()
                        if await self._stalled(stream):
                            await unsubscribe_quietly(sub)
                            sub = None
                    continue
                heard = time.monotonic()
                new_revocation = False
                async with conn.transaction():
                    for m in msgs:
                        try:
                            async with conn.transaction():  # a savepoint: one malformed event cannot block the rest
                                new_revocation |= await self._handle(conn, m)
                        except (KeyError, TypeError, ValueError, psycopg.errors.DataError) as exc:
                            _log.warning("malformed event on %s dropped: %r", m.subject, exc)
                for m in msgs:
                    await m.ack()
                if new_revocation:
                    self.kick.set()
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as exc:  # NATS away or PostgreSQL hiccup: not acked, so redelivered later
                _log.warning("ingest %s: %r", stream, exc)
                if conn.closed:
                    conn = await db.connect(self.db_url)
                if sub is not None and not self.nc.is_reconnecting:
                    await unsubscribe_quietly(sub)  # whatever broke, the next round binds afresh
                    sub = None
                await asyncio.sleep(0.5)

    async def _stalled(self, stream: str) -> bool:
        """Events wait in the stream for us, yet fetches bring nothing: the pull requests go nowhere.

        A CI run saw ingest go silent for two minutes after nats-server was killed and restarted, with no
        error logged (cause not pinned down; nats.py issue 504 reports pull subscriptions that stop after a
        server restart).  A fresh subscription (a new inbox) is the cure for a deaf one; events lost in
        flight come back when their ack wait runs out.
        """
        info = await self.js.consumer_info(stream, c.BACKOFFICE_CONSUMER)
        if not info.num_pending:
            return False
        _log.warning("ingest %s: %d events wait in the stream but none arrived for %.0f s; subscribing again",
                     stream, info.num_pending, STALL_S)
        return True

    async def _handle(self, conn, m) -> bool:
        tid, kind = c.parse_terminal_subject(m.subject)
        try:
            ev = json.loads(m.data)
        except ValueError:
            _log.warning("unreadable event on %s dropped", m.subject)
            return False
        if kind == c.HEARTBEAT:
            flag = await db.heartbeat(conn, tid, ev)
            if flag:
                await self._hold(tid, flag)
            return False
        msg_id = (m.headers or {}).get("Nats-Msg-Id") or c.msg_id(tid, str(m.metadata.sequence.stream))
        if not msg_id.startswith(c.msg_id(tid, "")):
            msg_id = c.msg_id(tid, msg_id)
        if await db.store_event(conn, msg_id, tid, kind, ev):
            effect = await db.apply_event(conn, tid, kind, ev, terminal_rate=self.terminal_rate)
            if kind == c.LEDGER and effect:  # a rolled-back ledger: pause face pay there
                await self._hold(tid, effect)
            return kind == c.OPTOUT and effect is not None
        return False

    async def _publish_revocations(self) -> None:
        conn = await db.connect(self.db_url)
        while not self._stopping:
            try:
                for rid, card_hash in await db.unpublished(conn):
                    body = c.signed_revocation(self.signing_key, rid, card_hash)
                    await self.js.publish(c.revoked_subject(card_hash), body, headers={"Nats-Msg-Id": rid},
                                          timeout=3)  # the compacted view first: a start never misses it
                    await self.js.publish(c.REVOCATIONS_SUBJECT, body, headers={"Nats-Msg-Id": rid}, timeout=3)
                    await conn.execute("UPDATE revocations SET published_at = now() WHERE id = %s", (rid,))
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as exc:
                _log.warning("revocations not published yet: %s", exc)
                if conn.closed:
                    conn = await db.connect(self.db_url)
            try:
                await asyncio.wait_for(self.kick.wait(), 0.5)
            except TimeoutError:
                pass
            self.kick.clear()

    async def set_mode(self, tid: str, mode: str) -> None:
        kv = await self.js.key_value(c.kv_bucket(tid))
        await kv.put(c.MODE_KEY, mode.encode())

    async def _hold(self, tid: str, reason: str) -> None:
        """Pause face pay at ``tid`` (its agent reads the ``hold`` key) until staff clear the flag."""
        try:
            kv = await self.js.key_value(c.kv_bucket(tid))
            await kv.put(c.HOLD_KEY, reason.encode())
        except Exception as exc:  # stored in PostgreSQL anyway; the next heartbeat tries again
            _log.warning("hold for %s not set yet: %r", tid, exc)

    async def clear_hold(self, tid: str) -> None:
        kv = await self.js.key_value(c.kv_bucket(tid))
        await kv.put(c.HOLD_KEY, b"")

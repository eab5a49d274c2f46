"""The terminal agent: the only part of a terminal that talks to the fleet, over NATS JetStream.

It connects out (the terminal never listens), with this terminal's own credentials, and runs four loops:

- outbox: publishes queued sale / ledger / enrolment / receipt events with ``Nats-Msg-Id`` = event id,
  marking each row sent after JetStream's acknowledgement;
- revocations: reads this terminal's durable consumer on the ``REVOCATIONS`` stream, checks each message's
  Ed25519 signature against ``[fleet] revocation_key``, crypto-shreds the card's local enrolments through
  ``Terminal.revoke`` and queues the deletion receipt, then acks; an unsigned or malformed message is
  acknowledged, counted and skipped (one bad message never stops the stream); reaching the end of the
  stream, after reconciling with the fleet's revoked card hashes since this start or reconnect, is what
  keeps face pay on (``[fleet] max_staleness_s``);
- mode: reads the terminal's key-value bucket (``mode``, and ``hold``: a rolled-back ledger) every second
  and switches mode when the terminal is idle (``Terminal.set_mode`` records it in the consent ledger);
- heartbeat: version, mode, reader/camera health (the kiosk's own, live; a headless agent's from the last
  ``facepay doctor``), outbox backlog, ledger head, how many bad revocation messages were skipped.

A terminal's NATS account has no JetStream of its own: it reaches its consumer, its bucket and the revoked
view through the back office's service exports under ``JS_PREFIX``, and can create no consumer.

``facepay agent`` runs it headless; the kiosk runs the same class in a thread.  It is the top of the fleet
stack: it ties the service, the config and ``terminal/fleet/`` (the contract, the outbox, the local link),
which import nothing above them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import signal
import threading
import time
from pathlib import Path

from . import __version__, failpoints
from .errors import UsageError
from .fleet import contract as fc
from .fleet import outbox
from .fleet.contract import BadRevocation, load_public_key, tls_context, unsubscribe_quietly, verify_revocation
from .modes import MODES

_log = logging.getLogger("facepay.agent")

# A (re)connect is a TLS handshake plus a bcrypt check of the password at the server, one client after
# another.  When nats-server comes back, every terminal of the fleet reconnects at once and a loaded back
# office needs seconds for each CONNECT: a client that gives up sooner has made the server do its bcrypt for
# nothing and at once asks for another, and the fleet never gets back in (20 agents at 2 s, a CI run).  So
# the handshake may take this long, and attempts are spread out with jittered, growing waits.
CONNECT_TIMEOUT_S = 10
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 8.0
STOP_GRACE_S = 3.0  # after the stop: this long for the loops, then as long again for the connection's close


def reconnect_wait(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 first): jittered, doubling up to RECONNECT_MAX_S."""
    return random.uniform(RECONNECT_MIN_S, min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** attempt))


def save_doctor_state(data_dir: Path, checks: list[dict]) -> None:
    """`facepay doctor` leaves its findings for the agent's heartbeat (written whole, then renamed)."""
    from .datadir import write_private

    if not data_dir.is_dir():
        return
    write_private(data_dir / "doctor-last.json", json.dumps({"at": time.time(), "checks": checks}))


NOT_CHECKED = "not checked: no kiosk runs here and `facepay doctor` has not run"


def doctor_state(data_dir: Path) -> dict:
    """Reader and camera as the last `facepay doctor` found them (a headless agent never opens either)."""
    state = {"reader": NOT_CHECKED, "camera": NOT_CHECKED}
    try:
        found = json.loads((data_dir / "doctor-last.json").read_text())
    except (OSError, ValueError):
        return state
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(found.get("at", 0)))
    state = {part: f"not checked by the last `facepay doctor` ({when})" for part in state}
    for c in found.get("checks", []):
        for part in ("reader", "camera"):
            if part in c.get("name", ""):
                state[part] = ("ok: " if c.get("ok") else "FAIL: ") + c.get("detail", "") + f" (facepay doctor, {when})"
    return state


class Agent:
    def __init__(self, cfg, data_dir: Path, *, is_idle=None, health=None):
        if not cfg.fleet.enabled:
            raise UsageError("this terminal is not in a fleet: its config has no [fleet] section",
                             cfg.source, "write one with `facepay-backoffice provision --terminal-id ID --out FILE`")
        self.cfg = cfg
        self.tid = cfg.terminal_id
        self.data_dir = Path(data_dir)
        self.is_idle = is_idle or (lambda: True)
        self.health = health  # the kiosk's live reader/camera health; None: the last `facepay doctor`'s
        self.term = None
        self.nc = None
        self.js = None
        self.wanted_mode: str | None = None
        self._kick = None
        self._stopping = False
        self._key = load_public_key(cfg.fleet.revocation_key)
        self._need_reconcile = True  # at start and after every reconnect
        self._attempts = 0  # reconnect attempts since the connection was last up

    # -- connection ---------------------------------------------------------------
    async def _connect(self, stop: asyncio.Event):
        import nats

        f = self.cfg.fleet

        async def error_cb(exc):
            _log.warning("nats: %s", exc)

        async def reconnected_cb():
            self._attempts = 0
            self._need_reconcile = True  # a message lost while away, or a consumer reset, cannot bring a face back

        def next_server(servers, info):  # nats-py asks before each reconnect attempt: (any server, wait)
            wait = reconnect_wait(self._attempts)
            self._attempts += 1
            return None, wait

        tls = tls_context(f.ca_pem) if f.ca_pem else None
        attempt = 0
        while not stop.is_set():
            connecting = asyncio.ensure_future(nats.connect(
                servers=[f.nats_url], user=f.user, password=f.password, name=f"facepay-{self.tid}",
                inbox_prefix=fc.inbox_prefix(self.tid), connect_timeout=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=-1, allow_reconnect=True, error_cb=error_cb,
                reconnected_cb=reconnected_cb, reconnect_to_server_handler=next_server, tls=tls))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():  # stopped while a handshake waits: it does not hold the stop up
                connecting.cancel()
                await asyncio.wait({connecting}, timeout=STOP_GRACE_S)
                return None
            try:
                return connecting.result()
            except Exception as exc:  # server down or unreachable: keep trying, face pay fails closed meanwhile
                _log.info("cannot reach %s yet (%s)", f.nats_url, exc)
                try:
                    await asyncio.wait_for(stop.wait(), reconnect_wait(attempt))
                except TimeoutError:
                    pass
                attempt += 1
        return None

    async def run(self, stop: asyncio.Event) -> None:
        from .service import Terminal  # not at import: `facepay doctor` saves its findings with this module

        self.term = Terminal(self.cfg, self.data_dir)
        self.term.fleet.reset_caught_up()  # face pay stays off until this start has reconciled and caught up
        self._kick = asyncio.Event()
        try:
            self.nc = await self._connect(stop)
            if self.nc is None:
                return
            self.js = self.nc.jetstream(timeout=3, prefix=fc.JS_PREFIX)
            _log.info("agent %s connected to %s", self.tid, self.cfg.fleet.nats_url)
            tasks = [asyncio.create_task(c) for c in (self._outbox_loop(), self._revocation_loop(),
                                                      self._heartbeat_loop(), self._mode_loop())]
            await stop.wait()
            self._stopping = True  # the loops end even where the client turns a cancellation into a timeout
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            # Not wait_for: nats-py's close() swallows a cancellation while it waits for its reconnect task
            # and then waits on the socket, so a timeout there does not end it (an agent stopped while the
            # server was away hung past 15 s).  The close gets its time; whatever is left is dropped.
            closing = asyncio.ensure_future(self.nc.close())
            await asyncio.wait({closing}, timeout=STOP_GRACE_S)
        finally:
            self.term.close()

    # -- outbox -------------------------------------------------------------------
    async def drain_once(self) -> int:
        sent = 0
        for db in (self.term.store.db, self.term.journal.db):
            for seq, eid, kind, payload in outbox.unsent(db):
                await self.js.publish(fc.terminal_subject(self.tid, kind), payload.encode(), timeout=3,
                                      headers={"Nats-Msg-Id": fc.msg_id(self.tid, eid)})
                failpoints.hit("fleet_after_publish")
                outbox.mark_sent(db, seq)
                sent += 1
        return sent

    async def _outbox_loop(self) -> None:
        while not self._stopping:
            try:
                if await self.drain_once():
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected or no ack in time: the row stays queued
                _log.info("outbox not drained yet: %s", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(self._kick.wait(), 0.5)
            except TimeoutError:
                pass
            self._kick.clear()

    # -- revocations ----------------------------------------------------------------
    async def _msg_get(self, stream: str, subject: str) -> bytes | None:
        """The last message on ``subject`` in ``stream`` (STREAM.MSG.GET through the back office's export);
        None when there is none."""
        r = await self.nc.request(fc.msg_get_subject(stream, fc.JS_PREFIX),
                                  json.dumps({"last_by_subj": subject}).encode(), timeout=3)
        d = json.loads(r.data)
        if "error" in d:
            if d["error"].get("err_code") == fc.MSG_NOT_FOUND:
                return None
            raise RuntimeError(f"{stream}: {d['error'].get('description')}")
        return base64.b64decode(d["message"].get("data") or b"")

    async def reconcile(self) -> int:
        """Look every card this terminal holds up in the fleet's revoked view (``REVOKED``, one signed message
        per revoked card hash) and delete what is on it: a restored data folder, a lost message or a reset
        consumer cannot bring a face back.  Returns how many cards were deleted."""
        deleted = 0
        for card_hash in self.term.fleet.linked_card_hashes():
            data = await self._msg_get(fc.REVOKED_STREAM, fc.revoked_subject(card_hash))
            if data is None:
                continue
            try:
                rid, h = verify_revocation(self._key, data)
                if h != card_hash:
                    raise BadRevocation("card hash does not match its subject")
            except BadRevocation as exc:
                _log.warning("revoked view entry for %s skipped: %s", card_hash[:12], exc)
                self.term.fleet.count_bad_revocation()
                continue
            _log.warning("reconciliation: card %s was revoked (%s): deleting here", card_hash[:12], rid)
            self.term.fleet.apply_revocation(rid, card_hash)
            deleted += 1
            self._kick.set()
        return deleted

    def _apply(self, m) -> None:
        """One message from the revocation stream: obeyed if the back office signed it, else counted."""
        try:
            rid, card_hash = verify_revocation(self._key, m.data)
        except BadRevocation as exc:
            n = self.term.fleet.count_bad_revocation()
            _log.warning("revocation stream message %s skipped (%s); %d skipped so far",
                         getattr(m.metadata.sequence, "stream", "?"), exc, n)
            return
        state = self.term.fleet.apply_revocation(rid, card_hash)
        _log.info("revocation %s: %s", rid, state)

    def _caught_up(self) -> None:
        if not self._need_reconcile:
            self.term.fleet.mark_caught_up()

    async def _revocation_loop(self) -> None:
        sub = None
        while not self._stopping:
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=fc.revocation_consumer(self.tid),
                                                           stream=fc.REVOCATIONS_STREAM)
                if self._need_reconcile and self.nc.is_connected:
                    self._need_reconcile = False  # set again by a reconnect meanwhile: then done once more
                    try:
                        await self.reconcile()
                    except BaseException:
                        self._need_reconcile = True
                        raise
                try:
                    msgs = await sub.fetch(batch=50, timeout=1.0)
                except TimeoutError:
                    # Nothing came.  Caught up only if the consumer itself says nothing waits for us: a
                    # timeout also follows a silent partition, or a subscription the server no longer
                    # delivers to, and neither may keep face pay on.
                    if self.nc.is_connected:
                        info = await sub.consumer_info()
                        if info.num_pending == 0 and info.num_ack_pending == 0:
                            self._caught_up()
                        elif info.num_pending:
                            _log.warning("%d revocations wait but none arrived: subscribing again", info.num_pending)
                            await unsubscribe_quietly(sub)
                            sub = None
                    continue
                for m in msgs:
                    self._apply(m)  # a failure to delete raises: not acked, read again
                    await m.ack()
                    self._kick.set()
                if msgs and msgs[-1].metadata.num_pending == 0:
                    await self.nc.flush(timeout=1)
                    self._caught_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.info("revocations not read: %r", exc)
                if sub is not None and not self.nc.is_reconnecting:
                    await unsubscribe_quietly(sub)  # whatever broke, the next round binds afresh
                    sub = None
                await asyncio.sleep(0.5)

    # -- mode -------------------------------------------------------------------------
    async def _mode_loop(self) -> None:
        bucket = fc.kv_stream(self.tid)
        while not self._stopping:
            try:
                wanted = await self._msg_get(bucket, fc.kv_subject(self.tid, fc.MODE_KEY))
                if wanted:
                    wanted = wanted.decode()
                    if wanted in MODES:
                        self.wanted_mode = wanted
                    elif wanted != self.wanted_mode:
                        _log.warning("the back office asked for unknown mode %r: ignored", wanted)
                hold = (await self._msg_get(bucket, fc.kv_subject(self.tid, fc.HOLD_KEY)) or b"").decode()
                if hold != (self.term.fleet.hold() or ""):
                    self.term.fleet.set_hold(hold)
                    _log.warning("face pay %s by the back office%s", "paused" if hold else "allowed again",
                                 f": {hold}" if hold else "")
                self.apply_mode()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.info("mode not read: %r", exc)
            await asyncio.sleep(1.0)

    def apply_mode(self) -> bool:
        """Follow the manager's mode when no sale or enrolment is in progress; recorded in the ledger."""
        if self.wanted_mode is None or self.wanted_mode == self.term.mode() or not self.is_idle():
            return False
        self.term.set_mode(self.wanted_mode, by="back office")
        _log.info("mode set to %s by the back office", self.wanted_mode)
        self._kick.set()
        return True

    # -- heartbeat ---------------------------------------------------------------------
    def heartbeat(self) -> dict:
        term = self.term
        head = term.store.db.execute("SELECT seq, mac FROM ledger_head WHERE id = 1").fetchone()
        return {"terminal_id": self.tid, "at": time.time(), "version": __version__, "mode": term.mode(),
                "face_pay_paused": term.fleet_paused(), "outbox_backlog": term.fleet.backlog(),
                "ledger_head": {"seq": head[0], "mac": head[1]} if head else {"seq": 0, "mac": ""},
                "bad_revocations": term.fleet.bad_revocations(), "hold": term.fleet.hold(),
                **(self.health() if self.health is not None else doctor_state(self.data_dir))}

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            try:
                await self.js.publish(fc.terminal_subject(self.tid, fc.HEARTBEAT), json.dumps(self.heartbeat()).encode(),
                                      timeout=2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.info("heartbeat not sent: %s", exc)
            await asyncio.sleep(self.cfg.fleet.heartbeat_s)


def run_headless(cfg, data_dir: Path) -> int:
    """`facepay agent`: run until SIGTERM/SIGINT."""
    agent = Agent(cfg, data_dir)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    run_bounded(main())
    return 0


def run_bounded(main) -> None:
    """``asyncio.run(main)``, except that the tasks ``main`` leaves behind (the NATS client's, stuck on a
    socket to a server that is away) get STOP_GRACE_S to end after their cancellation, not for ever."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for t in left:
                t.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=STOP_GRACE_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed but it is pending"
            loop.close()


class AgentThread:
    """The kiosk's in-process agent: the same Agent on its own event loop and SQLite connections."""

    def __init__(self, cfg, data_dir: Path, *, is_idle=None, health=None):
        self.agent = Agent(cfg, data_dir, is_idle=is_idle, health=health)
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._main, name="facepay-agent", daemon=True)

    def _main(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.agent.run(self._stop)

        try:
            run_bounded(main())
        except Exception:
            _log.exception("the fleet agent stopped")

    def start(self) -> "AgentThread":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop ended meanwhile
                pass
        self._thread.join(timeout)

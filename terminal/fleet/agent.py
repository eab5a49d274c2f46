"""The terminal agent: the only part of a terminal that talks to the fleet, over NATS JetStream.

It connects out (the terminal never listens), with this terminal's own credentials, and runs four loops:

- outbox: publishes queued sale / ledger / enrolment / receipt events with ``Nats-Msg-Id`` = event id,
  marking each row sent after JetStream's acknowledgement;
- revocations: reads this terminal's durable consumer on the ``REVOCATIONS`` stream, crypto-shreds the
  card's local enrolments through ``Terminal.revoke`` and queues the deletion receipt, then acks; reaching
  the end of the stream is what keeps face pay on (``[fleet] max_staleness_s``);
- mode: watches the terminal's key-value bucket and switches mode when the terminal is idle
  (``Terminal.set_mode`` records it in the consent ledger);
- heartbeat: version, mode, reader/camera health (the kiosk's own, live; a headless agent's from the last
  ``facepay doctor``), outbox backlog, ledger head.

``facepay agent`` runs it headless; the kiosk runs the same class in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from pathlib import Path

from .. import __version__, failpoints
from ..errors import UsageError
from . import outbox, unsubscribe_quietly

_log = logging.getLogger("facepay.agent")

REVOCATION_STREAM = "REVOCATIONS"


def subject(terminal_id: str, kind: str) -> str:
    return f"facepay.t.{terminal_id}.{kind}"


def save_doctor_state(data_dir: Path, checks: list[dict]) -> None:
    """`facepay doctor` leaves its findings for the agent's heartbeat (written whole, then renamed)."""
    from ..datadir import write_private

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

    # -- connection ---------------------------------------------------------------
    async def _connect(self, stop: asyncio.Event):
        import nats

        f = self.cfg.fleet

        async def error_cb(exc):
            _log.warning("nats: %s", exc)

        while not stop.is_set():
            try:
                return await nats.connect(
                    servers=[f.nats_url], user=f.user, password=f.password, name=f"facepay-{self.tid}",
                    inbox_prefix=f"_INBOX_{self.tid}", connect_timeout=2, reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1, allow_reconnect=True, error_cb=error_cb)
            except Exception as exc:  # server down or unreachable: keep trying, face pay fails closed meanwhile
                _log.info("cannot reach %s yet (%s)", f.nats_url, exc)
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass
        return None

    async def run(self, stop: asyncio.Event) -> None:
        from ..service import Terminal

        self.term = Terminal(self.cfg, self.data_dir)
        self._kick = asyncio.Event()
        try:
            self.nc = await self._connect(stop)
            if self.nc is None:
                return
            self.js = self.nc.jetstream(timeout=3)
            _log.info("agent %s connected to %s", self.tid, self.cfg.fleet.nats_url)
            tasks = [asyncio.create_task(c) for c in (self._outbox_loop(), self._revocation_loop(),
                                                      self._heartbeat_loop(), self._mode_loop())]
            await stop.wait()
            self._stopping = True  # the loops end even where the client turns a cancellation into a timeout
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=5)
            try:
                await asyncio.wait_for(self.nc.close(), 3)
            except Exception:
                pass
        finally:
            self.term.close()

    # -- outbox -------------------------------------------------------------------
    async def drain_once(self) -> int:
        sent = 0
        for db in (self.term.store.db, self.term.journal.db):
            for seq, eid, kind, payload in outbox.unsent(db):
                await self.js.publish(subject(self.tid, kind), payload.encode(), timeout=3,
                                      headers={"Nats-Msg-Id": f"{self.tid}:{eid}"})
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
    async def _revocation_loop(self) -> None:
        sub = None
        while not self._stopping:
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=f"rev_{self.tid}", stream=REVOCATION_STREAM)
                try:
                    msgs = await sub.fetch(batch=50, timeout=1.0)
                except TimeoutError:
                    # Nothing came.  Caught up only if the consumer itself says nothing waits for us: a
                    # timeout also follows a silent partition, or a subscription the server no longer
                    # delivers to, and neither may keep face pay on.
                    if self.nc.is_connected:
                        info = await sub.consumer_info()
                        if info.num_pending == 0 and info.num_ack_pending == 0:
                            self.term.fleet.mark_caught_up()
                        elif info.num_pending:
                            _log.warning("%d revocations wait but none arrived: subscribing again", info.num_pending)
                            await unsubscribe_quietly(sub)
                            sub = None
                    continue
                for m in msgs:
                    d = json.loads(m.data)
                    state = self.term.fleet.apply_revocation(d["revocation_id"], d["card_hash"])
                    _log.info("revocation %s: %s", d["revocation_id"], state)
                    await m.ack()
                    self._kick.set()
                if msgs and msgs[-1].metadata.num_pending == 0:
                    await self.nc.flush(timeout=1)
                    self.term.fleet.mark_caught_up()
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
        from ..config import TERMINAL_MODES

        watcher = None
        while not self._stopping:
            try:
                if watcher is None:
                    kv = await self.js.key_value(f"fleet_{self.tid}")
                    watcher = await kv.watch("mode")
                try:
                    entry = await watcher.updates(timeout=1.0)
                except TimeoutError:
                    entry = None
                if entry is not None and entry.value:
                    wanted = entry.value.decode()
                    if wanted in TERMINAL_MODES:
                        self.wanted_mode = wanted
                    else:
                        _log.warning("the back office asked for unknown mode %r: ignored", wanted)
                self.apply_mode()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.info("mode watch: %r", exc)
                watcher = None
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
                **(self.health() if self.health is not None else doctor_state(self.data_dir))}

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            try:
                await self.js.publish(subject(self.tid, "hb"), json.dumps(self.heartbeat()).encode(), timeout=2)
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

    asyncio.run(main())
    return 0


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
            asyncio.run(main())
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

"""``facepay till``: the till link with the configured reader, camera and processor, and no screen.

One thread drives the checkout state machine (as the kiosk's main loop does): events are queued,
handled in order by the same :class:`terminal.runner.Runner`, and every change is handed to the
link.  Timers are real (the consent and result time-outs, the unknown outcome's look-ups).  Card
taps come from the reader; with ``--demo --auto-card UID`` the simulated PN532 presents that card
one second after each amount becomes due and holds it there until the tap is taken (at most
:data:`HOLD_CARD_S`).  With no screen nobody can confirm a face payment on
it, so a face match here ends at the consent time-out, cancelled (no charge without confirmation
on screen); a face scan starts only when something posts ``ChooseFace`` (the tests).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

from .. import checkout as co
from ..payments.journal import new_sale_id
from ..runner import Runner
from .link import Desk

_log = logging.getLogger(__name__)
HOLD_CARD_S = 10.0   # --auto-card: the longest the simulated card stays on the reader for one sale


class HeadlessDesk(Desk):
    def __init__(self, term, hw, auto_card: bytes | None = None):
        self.term, self.hw, self.auto_card = term, hw, auto_card
        self.machine = co.CheckoutMachine(term.policy(), face_pay=term.cfg.face_pay, mode=term.mode())
        self.runner = Runner(term, self.machine, hw.camera, hw.leds, on_timer=self._timer)
        self.runner.on_cooldown = lambda eff: threading.Timer(eff.seconds, self.post,
                                                              (co.CooldownOver(eff.token),)).start()
        self.events: queue.Queue = queue.Queue()
        self.subscribers: list = []
        self.refusals: list[co.Refusal] = []   # every event the machine refused, with its reason
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._scan_worker, name="till-scan", daemon=True)
        self.scans: queue.Queue = queue.Queue()
        self._announced: str | None = None
        for eff in self.machine.startup_effects():
            self.runner.perform(eff)
        self.loop = threading.Thread(target=self._loop, name="till-checkout", daemon=True)
        self.reader = threading.Thread(target=self._read_cards, name="till-reader", daemon=True)

    def start(self) -> HeadlessDesk:
        self.loop.start()
        self.reader.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.runner.scans.drop()
        self.events.put(None)
        self.scans.put(None)

    # -- the machine's thread -------------------------------------------------------------
    def post(self, event, reply: queue.Queue | None = None) -> None:
        self.events.put((event, reply))

    def call(self, event, timeout: float = 30.0):
        """Post ``event`` and wait until it was handled; raises co.Rejected as the machine did."""
        reply: queue.Queue = queue.Queue()
        self.post(event, reply)
        err = reply.get(timeout=timeout)
        if err is not None:
            raise err

    def _loop(self) -> None:
        while not self.stopping.is_set():
            item = self.events.get()
            if item is None:
                break
            event, reply = item
            err = None
            try:
                for eff in self.runner.dispatch(event, deferred={co.OpenCamera}):
                    self.scans.put(eff)
            except co.Rejected as exc:
                err = exc
                self.refusals.append(co.Refusal(type(event).__name__, exc.reason))
            except Exception as exc:  # a part failed: the machine keeps running
                _log.exception("event %s failed", type(event).__name__)
                err = co.Rejected(str(exc))
            if reply is not None:
                reply.put(err)
            self._changed()

    def _scan_worker(self) -> None:
        while True:
            eff = self.scans.get()
            if eff is None:
                return
            try:
                self.runner.work(eff, self.post)
            except Exception as exc:
                _log.exception("face scan failed")
                self.post(co.CameraFault(str(exc)))

    def _changed(self) -> None:
        snap = self.machine.snapshot()
        for fn in list(self.subscribers):
            try:
                fn(snap)
            except Exception:
                _log.exception("till listener failed")
        sale = snap["sale"]
        if (self.auto_card and self.hw.sim is not None and snap["state"] == "amount_due" and sale
                and self._announced != sale["sale_id"]):
            self._announced = sale["sale_id"]
            threading.Timer(1.0, self._present, (sale["sale_id"],)).start()

    def _still_due(self, sale_id: str) -> bool:
        """The sale ``sale_id`` is the one on the terminal and still waits for its card."""
        sale = self.machine.view().sale
        return sale is not None and sale.sale_id == sale_id and self.machine.state == co.State.AMOUNT_DUE

    def _present(self, sale_id: str) -> None:
        if not self._still_due(sale_id):
            return
        self.hw.sim.present(self.auto_card)
        threading.Thread(target=self._hold_card, args=(sale_id,), name="till-auto-card", daemon=True).start()

    def _hold_card(self, sale_id: str, most_s: float = HOLD_CARD_S) -> None:
        """The card stays on the reader until the terminal has taken the tap (as a shopper holds it until
        the beep), at most ``most_s``: a fixed short tap was missed when a loaded machine polled late."""
        end = time.monotonic() + most_s
        while time.monotonic() < end and self._still_due(sale_id):
            time.sleep(0.1)
        time.sleep(0.3)
        self.hw.sim.remove()

    def _timer(self, eff: co.StartTimer) -> None:
        t = threading.Timer(eff.seconds, self.post, (co.Timeout(eff.token),))
        t.daemon = True
        t.start()

    def _read_cards(self) -> None:
        from firmware_bridge.service import CardPresented, ReaderBack, ReaderLost

        while not self.stopping.is_set():
            try:
                ev = self.hw.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(ev, CardPresented):
                if self.machine.state in (co.State.AMOUNT_DUE, co.State.FACE_SCAN):
                    self.post(self.term.tap(ev.uid))
            elif isinstance(ev, ReaderLost):
                self.post(co.ReaderStatus(False))
            elif isinstance(ev, ReaderBack):
                self.post(co.ReaderStatus(True))

    # -- Desk --------------------------------------------------------------------------------
    def start_sale(self, amount_minor: int) -> str:
        if self.machine.state in co.RESULT_STATES and self.machine.state != co.State.UNKNOWN:
            with contextlib.suppress(co.Rejected):
                self.call(co.Done())   # the next customer's amount: the last result screen goes
        sale_id = new_sale_id()
        self.call(co.StartSale(sale_id, amount_minor, self.term.cfg.payment.currency))
        return sale_id

    def till_abort(self) -> bool:
        if self.machine.state.value not in ("amount_due", "face_scan", "consent"):
            return False
        try:
            self.call(co.Cancel())
        except co.Rejected:
            return False
        return True

    def subscribe(self, fn) -> None:
        self.subscribers.append(fn)

    def snapshot(self) -> dict:
        with self.runner.lock:
            return self.machine.snapshot()

    def locked(self):
        return self.runner.lock


def run_headless(ctx, listen: str | None, serial: str | None, demo: bool, auto_card: bytes | None) -> int:
    """The ``facepay till`` command: serve until SIGTERM or Ctrl-C; prints where it listens."""
    import dataclasses
    import os
    import signal
    import sys

    from ..errors import UsageError
    from ..hardware import build_hardware, demo_config
    from ..service import Terminal
    from .link import TillLink

    cfg = demo_config(ctx.cfg) if demo else ctx.cfg
    if auto_card is not None and not demo:
        raise UsageError("--auto-card needs --demo (it presents the card on the simulated reader)", "till")
    till = cfg.till
    if listen:
        till = dataclasses.replace(till, transport="tcp")
        object.__setattr__(till, "listen", listen)   # --listen may name port 0 (any free port), [till] may not
    elif serial:
        till = dataclasses.replace(till, transport="serial", device=serial)
    elif till.transport == "none":
        raise UsageError("no till link to run", "till", f"pass --listen HOST:PORT or --serial DEVICE, or set "
                         f"[till] transport in {cfg.source}")
    cfg = dataclasses.replace(cfg, till=till)   # the [till] checks (currency, device) run again here
    if till.transport == "serial" and "://" not in till.device and not os.path.exists(till.device):
        from ..errors import InputError

        raise InputError("no such serial device", till.device, "plug in the till's cable or adapter; "
                         "`ls /dev/serial/by-id/` lists them")
    term = Terminal(cfg, ctx.data_dir, channel="cli")
    ctx._term = term
    recovered = term.recover()
    if recovered:
        _log.info("recovered %d sale(s) left in flight: %s", len(recovered), recovered)
    hw = build_hardware(cfg, term.data_dir)
    desk = HeadlessDesk(term, hw, auto_card).start()
    link = None
    try:
        link = TillLink(desk, cfg).start()
        where = (f"{link.address[0]}:{link.address[1]}" if till.transport == "tcp" else till.device)
        print(f"facepay till: ZVT on {till.transport} {where}", flush=True)
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *a: done.set())
        while not done.wait(0.5):
            pass
        return 0
    except OSError as exc:
        print(f"facepay till: error: cannot listen on {till.listen}: {exc}", file=sys.stderr)
        return 2
    finally:
        if link is not None:
            link.stop()
        desk.stop()
        hw.close()

"""The till link inside the kiosk (``facepay run`` with ``[till]`` set): the same link as ``facepay till``,
driving the kiosk's own controller, so an amount from the till opens the same pay and consent screens
as the staff keypad's.  The link runs on its own threads; everything that touches the machine is
handed to Kivy's main loop, and the controller's every refresh is handed back to the link."""

from __future__ import annotations

import threading

from kivy.clock import Clock

from .. import checkout as co
from ..till.link import UNCONFIRMED, Desk, TillLink


class KioskDesk(Desk):
    prints = True   # the controller prints every sale's receipt itself (keypad or till)

    def __init__(self, ctl):
        self.ctl, self.term = ctl, ctl.term
        self.subscribers: list = []
        self.link: TillLink | None = None
        ctl.observers.append(self._changed)

    def start(self) -> KioskDesk:
        self.link = TillLink(self, self.term.cfg).start()
        return self

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()

    def _changed(self, snap: dict) -> None:
        for fn in list(self.subscribers):
            fn(snap)

    def _on_main(self, fn, timeout: float = 10.0):
        done, box = threading.Event(), {}

        def run(dt):
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the link's thread
                box["error"] = exc
            done.set()

        Clock.schedule_once(run, 0)
        if not done.wait(timeout):
            raise co.Rejected("the kiosk did not answer in time")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def start_sale(self, amount_minor: int) -> str:
        def go():
            ctl = self.ctl
            if ctl.machine.state in co.RESULT_STATES and ctl.machine.state != co.State.UNKNOWN:
                ctl.done()   # the next customer's amount: the last result screen goes
            if not ctl.start_sale(amount_minor):
                raise co.Rejected(str(ctl.refusals[-1]) if ctl.refusals else "the kiosk is busy")
            return ctl.machine.view().sale.sale_id
        return self._on_main(go)

    def till_abort(self) -> bool:
        return self._on_main(lambda: self.ctl.machine.state.value in UNCONFIRMED and self.ctl.cancel())

    def subscribe(self, fn) -> None:
        self.subscribers.append(fn)

    def snapshot(self) -> dict:
        with self.ctl.runner.lock:
            return self.ctl.machine.snapshot()

    def locked(self):
        return self.ctl.runner.lock

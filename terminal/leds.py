"""Status LEDs over GPIO through gpiozero.

Wiring (BCM numbers, defaults in ``[leds]``; each LED through a 330 ohm
resistor to ground)::

    privacy   GPIO17  white   lit while camera frames are processed, and only then
    consent   GPIO27  amber   steady: amount due / processing; blinking: awaiting the shopper's Confirm
    approved  GPIO22  green   payment approved, enrolment stored, data deleted
    declined  GPIO23  red     declined or cancelled
    fault     GPIO24  red     blinking: reader lost, camera missing, out of service, payment not confirmed

``backend = "gpio"`` lets gpiozero pick its pin factory (lgpio on a Pi 5,
RPi.GPIO on older Pis; ``GPIOZERO_PIN_FACTORY`` overrides); ``"mock"`` uses
gpiozero's ``MockFactory`` (the demo and the tests).

Example::

    board = LedBoard(LedConfig(backend="mock"))
    board.show("approved")
    board.privacy(True)
"""

from __future__ import annotations

import threading

from .config import LedConfig
from .errors import HardwareError

STATUS_LEDS = ("consent", "approved", "declined", "fault")

# pattern -> {led: "on" | "blink"}; every status LED not named is off.
PATTERNS: dict[str, dict[str, str]] = {
    "off": {},
    "idle": {},
    "amount_due": {"consent": "on"},
    "scanning": {},
    "consent": {"consent": "blink"},
    "processing": {"consent": "on"},
    "approved": {"approved": "on"},
    "declined": {"declined": "on"},
    "fault": {"fault": "blink"},
}

BLINK_S = 0.5


class LedBoard:
    def __init__(self, cfg: LedConfig, pin_factory=None):
        from gpiozero import LED
        from gpiozero.exc import GPIOZeroError

        if pin_factory is None and cfg.backend == "mock":
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        self.pin_factory = pin_factory
        self.pins = {"privacy": cfg.privacy, "consent": cfg.consent, "approved": cfg.approved,
                     "declined": cfg.declined, "fault": cfg.fault}
        self._lock = threading.Lock()
        try:
            self.leds = {name: LED(pin, pin_factory=pin_factory) for name, pin in self.pins.items()}
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            raise HardwareError(f"the LEDs cannot be driven: {exc}", "GPIO",
                                "check the pins in [leds] and that this user is in the gpio group") from None
        self.pattern = "off"
        self.state = {name: "off" for name in self.pins}
        self.fault_latched = False

    def show(self, pattern: str) -> None:
        if pattern not in PATTERNS:
            raise ValueError(f"unknown LED pattern {pattern!r}")
        with self._lock:
            self.pattern = pattern
            wanted = dict(PATTERNS[pattern])
            if self.fault_latched and pattern not in ("approved", "declined"):
                wanted["fault"] = "blink"
            for name in STATUS_LEDS:
                self._set(name, wanted.get(name, "off"))

    def set_fault(self, on: bool) -> None:
        """A lasting fault (reader lost, camera missing) keeps the fault LED blinking."""
        self.fault_latched = on
        self.show(self.pattern)

    def privacy(self, on: bool) -> None:
        with self._lock:
            self._set("privacy", "on" if on else "off")

    def _set(self, name: str, mode: str) -> None:
        if self.state[name] == mode:
            return
        led = self.leds[name]
        if mode == "on":
            led.on()
        elif mode == "blink":
            led.blink(on_time=BLINK_S, off_time=BLINK_S)
        else:
            led.off()
        self.state[name] = mode

    def blink_each(self, seconds: float = 0.3) -> list[str]:
        """The technician's test: light each LED once in turn (``facepay doctor --blink``)."""
        import time

        done = []
        saved = dict(self.state)
        for name, led in self.leds.items():
            led.on()
            time.sleep(seconds)
            led.off()
            done.append(name)
        for name, mode in saved.items():
            self.state[name] = "off"
            self._set(name, mode)
        return done

    def close(self) -> None:
        for led in self.leds.values():
            led.close()

"""Push buttons on GPIO inputs as a second keypad (beside a USB numeric keypad): previous, next, enter,
back and "More time", read through gpiozero.

Each button closes a contact to ground (the input's pull-up holds it high otherwise).  The pins are
``[accessibility] button_*_gpio`` (BCM numbers, -1 = no such button).  A press calls
``on_press(action)`` on gpiozero's thread; the kiosk hands it to its main loop, where the keypad focus
(terminal/ui/keys.py) does what the USB keypad's arrow, Enter, minus and plus keys do.  No Kivy here.

    buttons = GpioButtons(pins_of(cfg.accessibility), print, pin_factory=MockFactory())
    buttons.buttons["next"].pin.drive_low()      # prints "next"
"""

from __future__ import annotations

from functools import partial

# action -> the [accessibility] key naming its pin
ACTIONS = {"prev": "button_prev_gpio", "next": "button_next_gpio", "enter": "button_enter_gpio",
           "back": "button_back_gpio", "more_time": "button_more_time_gpio"}


def pins_of(a11y) -> dict[str, int]:
    """The buttons this config has: action -> BCM pin (those set to -1 are left out)."""
    return {action: getattr(a11y, key) for action, key in ACTIONS.items() if getattr(a11y, key) >= 0}


class GpioButtons:
    def __init__(self, pins: dict[str, int], on_press, pin_factory=None):
        from gpiozero import Button

        unknown = set(pins) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown button action(s) {sorted(unknown)}: one of {', '.join(ACTIONS)}")
        self.buttons: dict = {}
        try:
            for action, pin in pins.items():
                b = Button(pin, pull_up=True, pin_factory=pin_factory)
                b.when_pressed = partial(on_press, action)
                self.buttons[action] = b
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for b in self.buttons.values():
            b.close()
        self.buttons = {}

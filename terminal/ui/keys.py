"""The kiosk without touch: a USB numeric keypad (or any keyboard) moves a visible focus and presses.

Keys (numeric keypad, NumLock on or off):

    arrows, Tab, or 8/2/4/6 where no digits are asked   move the focus (shown as a thick ring, and spoken)
    Enter                                               press the focused button
    0-9 and "."                                         type digits where a keypad is on screen
    Backspace                                           delete the last digit
    +                                                   More time, while a timeout counts down
    -                                                   Cancel / Back / No thanks
    *                                                   speech on or off
    /                                                   high-contrast large-text mode on or off
    "." where no digits are asked                       say the screen again

GPIO push buttons (``[accessibility] button_*_gpio``, terminal/buttons.py) are a second keypad: previous,
next, enter, back and More time do what the arrows, Enter, minus and plus do here (:meth:`KeyNav.action`).

The focus visits the buttons of the screen shown now, then the status strip's own (language,
contrast, speech).  Screens still never touch hardware: this only presses their widgets.
"""

from __future__ import annotations

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.button import Button
from kivy.uix.textinput import TextInput

# Kivy keycodes
UP, DOWN, RIGHT, LEFT = 273, 274, 275, 276
ENTER, KP_ENTER, BACKSPACE, TAB = 13, 271, 8, 9
KP_DIGITS = {256 + i: str(i) for i in range(10)}
KP_DOT, KP_DIV, KP_MUL, KP_MINUS, KP_PLUS = 266, 267, 268, 269, 270
NAV_DIGITS = {"8": -1, "4": -1, "2": 1, "6": 1}
BACK_IDS = ("cancel", "back", "decline")


class KeyNav:
    def __init__(self, app):
        self.app = app
        self.ctl = app.ctl
        self.focused: Button | None = None
        Window.bind(on_key_down=self._key_down)
        self.ctl.bind(screen=self._screen_changed)
        Clock.schedule_interval(self._follow, 0.2)

    # -- what can take the focus -----------------------------------------------------------
    def _has_pad(self) -> bool:
        scr = self.app.screens[self.ctl.screen]
        return any(type(w).__name__ == "Pad" and w.get_root_window() is not None and w.width > 1 and w.opacity > 0
                   for w in scr.walk())

    @staticmethod
    def _usable(w) -> bool:
        if not isinstance(w, Button) or w.disabled or w.get_root_window() is None:
            return False
        if w.width < 2 or w.height < 2:
            return False
        p = w
        while p is not None:
            if p.opacity <= 0:
                return False
            p = p.parent if p.parent is not p else None
        return True

    def focusables(self) -> list:
        scr = self.app.screens[self.ctl.screen]
        own = [w for w in scr.walk(restrict=True) if self._usable(w)]
        strip = [w for w in self.app.root.ids.strip.walk(restrict=True) if self._usable(w)]
        return own + strip

    # -- moving and pressing -----------------------------------------------------------------
    def move(self, step: int) -> None:
        items = self.focusables()
        if not items:
            return
        i = items.index(self.focused) if self.focused in items else (-1 if step > 0 else 0)
        self.set_focus(items[(i + step) % len(items)])

    def set_focus(self, w) -> None:
        self.focused = w
        self._follow()
        if w is not None:
            self.ctl.say(_button_words(w))

    def press(self) -> None:
        w = self.focused
        if w is None or not self._usable(w):
            self.move(1)
            return
        w.trigger_action(duration=0)

    def action(self, name: str) -> None:
        """What a GPIO button does (terminal/buttons.py): the same as the USB keypad's key for it."""
        if name == "prev":
            self.move(-1)
        elif name == "next":
            self.move(1)
        elif name == "enter":
            self.press()
        elif name == "back":
            self.press_id(*BACK_IDS)
        elif name == "more_time":
            if not self.ctl.more_time():
                self.ctl.say(_no_more_time())
        else:
            raise ValueError(f"unknown button action {name!r}")

    def press_id(self, *ids: str) -> bool:
        scr = self.app.screens[self.ctl.screen]
        for name in ids:
            w = scr.ids.get(name)
            if w is not None and self._usable(w):
                w.trigger_action(duration=0)
                return True
        return False

    def _screen_changed(self, *a) -> None:
        self.focused = None
        Clock.schedule_once(lambda dt: self._follow(), 0.1)

    def _follow(self, *a) -> None:
        """Keep the ring on the focused button as layouts move; drop it when the button goes away."""
        w = self.focused
        if w is None or not self._usable(w):
            self.focused = None
            self.app.focus_rect = [0, 0, 0, 0]
            return
        x, y = w.to_window(w.x, w.y)
        self.app.focus_rect = [x, y, w.width, w.height]

    # -- the keyboard --------------------------------------------------------------------------
    def _key_down(self, window, key, scancode=None, codepoint=None, modifiers=None):
        if isinstance(Window.focus_widget if hasattr(Window, "focus_widget") else None, TextInput):
            return False
        if any(isinstance(w, TextInput) and w.focus for w in self.app.screens[self.ctl.screen].walk()):
            if key in (TAB, ENTER, KP_ENTER, UP, DOWN):
                for w in self.app.screens[self.ctl.screen].walk():
                    if isinstance(w, TextInput):
                        w.focus = False
                self.move(1)
                return True
            return False
        digit = KP_DIGITS.get(key) or (codepoint if codepoint and codepoint.isdigit() else None)
        if key in (UP, LEFT) or (key == TAB and "shift" in (modifiers or [])):
            self.move(-1)
        elif key in (DOWN, RIGHT, TAB):
            self.move(1)
        elif key in (ENTER, KP_ENTER):
            self.press()
        elif key == BACKSPACE:
            self.ctl.key("back")
        elif key == KP_PLUS or codepoint == "+":
            self.action("more_time")
        elif key == KP_MINUS or codepoint == "-":
            self.action("back")
        elif key == KP_MUL or codepoint == "*":
            self.ctl.toggle_speech()
        elif key == KP_DIV or codepoint == "/":
            self.ctl.toggle_contrast()
        elif digit is not None or key == KP_DOT or codepoint == ".":
            if self._has_pad():
                self.ctl.key(digit if digit is not None else ".")
                self.ctl.say(_typed(len(self.ctl.keypad)))   # never the digits themselves: a PIN, phone digits
            elif digit in NAV_DIGITS:
                self.move(NAV_DIGITS[digit])
            elif digit is None:
                self.ctl.repeat()
            else:
                return False
        else:
            return False
        return True


def _button_words(w) -> str:
    from ..i18n import _

    text = " ".join(w.text.split())
    return _("{label}, button.", label=text)


def _typed(count: int) -> str:
    from ..i18n import _

    return _("{count} typed.", count=count)


def _no_more_time() -> str:
    from ..i18n import _

    return _("No more time can be added here.")

"""Screen classes: each renders controller state from its own ``assets/kv/<name>.kv`` and sends events.

No screen touches hardware, the database or the processor: they call the
controller's methods (``ctl.confirm()``, ``ctl.cancel()`` ...).
"""

from __future__ import annotations

from kivy.app import App
from kivy.properties import ListProperty, ObjectProperty
from kivy.uix.screenmanager import Screen
from kivy.uix.textinput import TextInput
from kivy.uix.widget import Widget

SCREENS = [
    "attract", "pay", "scan", "consent", "processing", "result",
    "enrol_consent", "enrol_details", "enrol_capture", "enrol_card", "enrol_done", "enrol_duplicate", "enrol_failed",
    "mydata_tap", "mydata_show", "mydata_deleted", "out_of_service",
    "staff_pin", "staff_menu", "staff_amount", "staff_report",
]


class KioskScreen(Screen):
    ctl = ObjectProperty(None)

    def on_ctl(self, _, ctl) -> None:
        if ctl is not None:
            ctl.bind(flow=self.clear_fields)

    def clear_fields(self, *a) -> None:
        """A flow ended: nothing the last shopper typed stays in a field for the next one."""
        for w in self.walk():
            if isinstance(w, TextInput):
                w.focus = False
                w.text = ""


def screen_classes() -> dict[str, type]:
    """One Screen subclass per screen, named as its kv rule (``attract`` -> ``AttractScreen``)."""
    out = {}
    for name in SCREENS:
        cls_name = "".join(part.capitalize() for part in name.split("_")) + "Screen"
        out[name] = type(cls_name, (KioskScreen,), {})
    return out


class Preview(Widget):
    """The camera picture fitted into the widget, and the face box mapped onto it (in window pixels)."""

    pic = ListProperty([0, 0, 0, 0])
    box = ListProperty([0, 0, 0, 0])

    def __init__(self, **kw):
        super().__init__(**kw)
        ctl = App.get_running_app().ctl
        ctl.bind(frame_size=self._layout, face_box=self._layout)
        self.bind(pos=self._layout, size=self._layout)

    def _layout(self, *a):
        ctl = App.get_running_app().ctl
        fw, fh = ctl.frame_size
        s = min(self.width / max(1, fw), self.height / max(1, fh))
        w, h = fw * s, fh * s
        x0, y0 = self.center_x - w / 2, self.center_y - h / 2
        self.pic = [x0, y0, w, h]
        if len(ctl.face_box) == 4:
            bx, by, bw, bh = ctl.face_box
            self.box = [x0 + bx * s, y0 + h - (by + bh) * s, bw * s, bh * s]
        else:
            self.box = [0, 0, 0, 0]

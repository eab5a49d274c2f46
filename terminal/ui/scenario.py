"""The kiosk scenario player's Kivy side: plays a scenario through the real widgets, a screenshot of every screen.

``facepay run --demo --script tests/scenarios/face_confirmed.toml --screenshots DIR``
presses the real buttons with touch events dispatched through Kivy's event
loop, taps cards through the PN532 simulator, shows faces through the replay
camera, saves ``DIR/NN-<screen>.png`` for each screen it passes through, then
checks the scenario's expectations against the journal, the processor's
ledger and the consent ledger, writes ``DIR/result.json`` and exits 0 only if
every expectation held.  The scenario file's format, its rendered material and
its expectations are :mod:`terminal.testing.scenario` (no Kivy there).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from kivy.base import EventLoop
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.input.motionevent import MotionEvent
from kivy.uix.button import Button
from kivy.uix.textinput import TextInput

from ..hardware import DEMO_CAMERA, DEMO_CARD, DEMO_NEWCOMER, DEMO_OTHER_CARD
from ..testing.scenario import (
    DISPLAY_WIDTH_MM,
    MIN_TARGET_MM,
    PRESENTATIONS,
    Presentations,
    as_read,
    check_expectations,
    load_scenario,
    shows_own_presentations,
)

_log = logging.getLogger(__name__)

# keypad key names -> (Kivy keycode, the text it types)
KEYCODES = {"up": (273, None), "down": (274, None), "right": (275, None), "left": (276, None), "tab": (9, None),
            "enter": (271, None), "backspace": (8, None), "dot": (266, "."), "slash": (267, "/"), "star": (268, "*"),
            "minus": (269, "-"), "plus": (270, "+"), **{str(i): (256 + i, str(i)) for i in range(10)}}


class ScriptTouch(MotionEvent):
    """A finger on the window at (x, y) pixels, sent through Kivy's input dispatch like a real touch.

    The player's own event, so a shipped ``facepay run --script`` needs nothing from Kivy's test
    package (``kivy.tests.common`` imports pytest).
    """

    def __init__(self, x: float, y: float):
        win = EventLoop.window
        super().__init__("facepay-script", id(self), {"x": x / (win.width - 1.0), "y": y / (win.height - 1.0)},
                         is_touch=True, type_id="touch")
        self.profile = ["pos"]

    def depack(self, args):
        self.sx, self.sy = args["x"], args["y"]
        super().depack(args)

    def touch_down(self) -> None:
        EventLoop.post_dispatch_input("begin", self)

    def touch_up(self) -> None:
        EventLoop.post_dispatch_input("end", self)


def _blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=4)
    return colours is not None  # four colours or fewer: nothing has been drawn


class ScreenRecorder:
    """Saves a PNG each time a different screen (or the same screen in a new state) is shown."""

    def __init__(self, app, folder: Path):
        self.app = app
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.visited: list[str] = []
        self.files: list[str] = []
        self._pending = None
        app.ctl.bind(screen=self._changed, state=self._changed)
        self._changed(first=True)

    def _changed(self, *a, first=False):
        name = self.app.ctl.screen
        key = f"{name}" if name != "result" else f"result-{self.app.ctl.state}"
        if not self.visited or self.visited[-1] != key:
            self.visited.append(key)
            if self._pending is not None:
                self._pending.cancel()
            # let the screen render (the window's very first frame takes longer) before the shot
            self._pending = Clock.schedule_once(lambda dt: self.shoot(key), 1.0 if first else 0.25)

    def shoot(self, label: str, tries: int = 6) -> None:
        saved = Window.screenshot(name=str(self.folder / "_shot.png"))  # Kivy appends a counter
        if not saved:
            return
        if tries > 1 and _blank(Path(saved)):
            # the window has not drawn yet (a slow machine): look again shortly, as a person would
            Path(saved).unlink()
            self._pending = Clock.schedule_once(lambda dt: self.shoot(label, tries - 1), 0.3)
            return
        self.count += 1
        target = self.folder / f"{self.count:02d}-{label}.png"
        Path(saved).replace(target)
        self.files.append(str(target))


class ScenarioPlayer:
    def __init__(self, app, path: Path, screenshots: str | None):
        self.app = app
        self.ctl = app.ctl
        self.path = path
        self.data = load_scenario(path)
        self.steps = list(self.data.get("steps", []))
        self.expect = self.data.get("expect", {})
        self.recorder = ScreenRecorder(app, Path(screenshots)) if screenshots else None
        self.visited: list[str] = []
        self.i = 0
        self.step_started = 0.0
        self.mark = 0
        self.keys_pressed = 0
        self.buttons_pressed = 0
        self._button_tries: dict[int, tuple] = {}
        self.touches = 0
        self.failures: list[str] = []
        self.fps_during_scan: list[float] = []
        self.ctl.bind(screen=self._note_screen)
        self._note_screen()
        self._presentations = Presentations(self.steps, path.parent, app.hw.camera.fps)
        if shows_own_presentations(self.steps):
            app.hw.shopper = None   # the demo's shopper steps aside (run_kiosk does not make one for such a script)
        import threading

        self._material_ready = threading.Event()

        def render():
            try:
                self._presentations.render()
            finally:
                self._material_ready.set()

        threading.Thread(target=render, name="scenario-material", daemon=True).start()
        self.screen_since += 0.8  # the window's first frame takes longer to come up

    def _note_screen(self, *a):
        self.screen_since = time.monotonic()
        self.screen_frame = Clock.frames
        if not self.visited or self.visited[-1] != self.ctl.screen:
            self.visited.append(self.ctl.screen)

    def start(self):
        self.step_started = time.monotonic()
        self._ev = Clock.schedule_interval(self._tick, 0.1)
        Clock.schedule_once(self._watchdog, float(self.data.get("timeout", 120)))

    def _watchdog(self, dt):
        if self.i < len(self.steps):
            self.failures.append(f"scenario timed out at step {self.i + 1}: {self.steps[self.i]}")
            self._finish()

    # -- finding and pressing real widgets ----------------------------------------------
    def _find(self, target: str):
        scr = self.app.screens[self.ctl.screen]
        if target in scr.ids:
            return scr.ids[target]
        for part in ("strip", "tray"):
            holder = self.app.root.ids[part]
            if target in holder.ids:
                return holder.ids[target]
        for w in scr.walk():
            if target in getattr(w, "ids", {}):
                return w.ids[target]
        return None

    def _touch(self, widget) -> None:
        x, y = widget.to_window(*widget.center)
        self.touches += 1
        touch = ScriptTouch(x, y)
        touch.touch_down()
        touch.touch_up()

    def _preview_drawn(self) -> list[str]:
        """Where a camera picture is held: the controller's texture, or a texture on a Preview widget's canvas."""
        from kivy.graphics import Rectangle

        from .screens import Preview

        blank = Rectangle().texture  # a Rectangle given no texture draws Kivy's shared white default one

        def picture(instruction) -> bool:
            tex = getattr(instruction, "texture", None)
            return tex is not None and tex is not blank

        held = ["controller.preview"] if self.ctl.preview is not None else []
        for name, scr in self.app.screens.items():
            for w in scr.walk():
                if isinstance(w, Preview) and any(picture(i) for i in w.canvas.children):
                    held.append(f"{name} screen")
        return held

    def _button(self, name: str) -> None:
        """Press and let go of a GPIO button on its mock pin: gpiozero calls back at once, and the kiosk
        hands the press to its main loop (it takes effect on the next frame)."""
        buttons = getattr(self.app, "buttons", None)
        if buttons is None or name not in buttons.buttons:
            raise ValueError(f"no GPIO button {name!r}: set [accessibility] button_{name}_gpio")
        pin = buttons.buttons[name].pin
        pin.drive_low()
        pin.drive_high()
        self.buttons_pressed += 1

    def _key(self, name: str) -> None:
        code, text = KEYCODES[name]
        Window.dispatch("on_key_down", code, 0, text, [])
        Window.dispatch("on_key_up", code, 0)
        self.keys_pressed += 1

    def _small_targets(self) -> list[str]:
        """Buttons on screen (and the strip) narrower or lower than MIN_TARGET_MM on the 7" display."""
        px_per_mm = Window.width / DISPLAY_WIDTH_MM
        out = []
        holders = [self.app.screens[self.ctl.screen], self.app.root.ids.strip]
        for holder in holders:
            for w in holder.walk(restrict=True):
                if isinstance(w, Button) and self._visible(w) and not w.disabled:
                    mm = min(w.width, w.height) / px_per_mm
                    if mm < MIN_TARGET_MM:
                        out.append(f"{w.text!r} {mm:.1f} mm")
        return out

    def _visible(self, w) -> bool:
        return w.opacity > 0 and w.width > 1 and w.height > 1 and w.get_root_window() is not None

    # -- the step loop -----------------------------------------------------------------------
    def _tick(self, dt):
        if self.ctl.screen in ("scan", "enrol_capture"):
            from kivy.clock import Clock as _C

            self.fps_during_scan.append(_C.get_fps())
        if self.i >= len(self.steps):
            self._finish()
            return False
        step = self.steps[self.i]
        timeout = float(step.get("timeout", 20))
        try:
            done = self._do(step)
        except Exception as exc:  # a broken step is a failed scenario, reported
            self.failures.append(f"step {self.i + 1} {step}: {exc}")
            self._finish()
            return False
        if done:
            self.i += 1
            self.step_started = time.monotonic()
        elif time.monotonic() - self.step_started > timeout:
            self.failures.append(f"step {self.i + 1} {step} not done after {timeout:.0f} s "
                                 f"(screen {self.ctl.screen}, state {self.ctl.state})")
            self._finish()
            return False
        return True

    def _settled(self) -> bool:
        """The current screen is the one shown and has been up 0.5 s and a few frames: laid out, as a person
        would wait before touching it.  The frames count as well as the clock: on a busy machine half a
        second can pass in one frame, and the screen manager drops every touch until its switch (even the
        instant one) has completed on a later frame."""
        sm = self.app.sm
        return (time.monotonic() - self.screen_since >= 0.5 and Clock.frames - self.screen_frame >= 3
                and sm.current == self.ctl.screen and not sm.transition.is_active)

    def _do(self, step: dict) -> bool:
        kind = step["do"]
        if kind in ("press", "keys", "type", "key", "key_to", "button", "targets") and not self._settled():
            return False  # let a new screen lay itself out before touching it, as a person would
        if kind == "press":
            w = self._find(step["target"])
            if w is None or not self._visible(w):
                return False
            if w.disabled and not step.get("allow_disabled"):
                return False
            self._touch(w)
            return True
        if kind == "keys":
            scr = self.app.screens[self.ctl.screen]
            for ch in step["keys"]:
                btn = next((b for b in scr.walk() if isinstance(b, Button) and b.text == ch), None)
                if btn is None:
                    raise ValueError(f"no key {ch!r} on screen {self.ctl.screen}")
                self._touch(btn)
            return True
        if kind == "wait":
            want = step["screen"]
            return self.ctl.screen == want and (not step.get("state") or self.ctl.state == step["state"])
        if kind == "tap_card":
            card = step.get("card", "shopper")
            uid = {"shopper": DEMO_CARD, "other": DEMO_OTHER_CARD, "random": "random"}.get(card) or bytes.fromhex(card)
            sim = self.app.hw.sim
            sim.present(uid)            # "random": a phone, a new random UID 08xxxxxx at each activation
            Clock.schedule_once(lambda dt: sim.remove(), float(step.get("hold", 0.8)))
            return True
        if kind == "type":
            w = self._find(step["target"])
            if not isinstance(w, TextInput):
                return False
            w.text = step["text"]
            return True
        if kind == "camera":
            cam = self.app.hw.camera
            self.app.hw.shopper = None   # the scenario says what the camera sees: the demo's shopper steps aside
            if step["source"] == "unplugged":  # the camera's cable is out: opening it fails
                cam.video = Path("/dev/null/camera-unplugged.mp4")
                return True
            if step["source"] in PRESENTATIONS:
                return self._show_presentation(step)
            if step["source"] == "empty":
                if not self._material_ready.is_set():
                    return False  # the rendered presentations are not ready yet: keep the scene empty a bit longer
                files = sorted(DEMO_CAMERA.glob("0-empty-*.jpg"))
            else:
                folder = {"camera": DEMO_CAMERA, "newcomer": DEMO_NEWCOMER}.get(step["source"])
                if folder is None:
                    raise ValueError(f"unknown camera source {step['source']!r}")
                files = sorted(folder.glob("*.jpg"))
            from ..face.images import load_rgb

            cam.show([load_rgb(f) for f in files], files)
            return True
        if kind == "reader":
            sim = self.app.hw.sim
            {"unplug": sim.unplug, "replug": sim.replug}[step["action"]]()
            return True
        if kind == "see":
            w = self._find(step["target"])
            if w is None or not (self._visible(w) or (step.get("exact") and not step["text"])):
                return False   # an empty label has no height: "shows nothing" needs only the widget
            shown = as_read(getattr(w, "text", ""))
            return shown == step["text"] if step.get("exact") else step["text"] in shown
        if kind == "cli":
            import subprocess
            import sys

            r = subprocess.run([sys.executable, "-m", "terminal", "--data-dir", str(self.app.term.data_dir),
                                *step["args"]], capture_output=True, text=True, timeout=60)
            if r.returncode != int(step.get("exit", 0)):
                raise ValueError(f"facepay {' '.join(step['args'])} exited {r.returncode}: {r.stderr.strip()}")
            return True
        if kind == "preview":
            held = self._preview_drawn()
            if step.get("shown", True):
                return bool(held)
            if held:
                raise ValueError(f"a camera picture is still held with the camera off ({', '.join(held)}; "
                                 f"screen {self.ctl.screen})")
            return True
        if kind == "key":
            for name in step["keys"]:
                self._key(name)
            return True
        if kind == "key_to":
            want = self._find(step["target"])
            if want is None or not self._visible(want) or want.disabled:
                return False
            nav = self.app.keys
            if step.get("via", "keys") == "buttons":
                # one GPIO press a frame (each reaches the focus through the main loop)
                tries, last, at = self._button_tries.get(id(step), (0, None, 0.0))
                if nav.focused is None or nav.focused != want:
                    if tries and nav.focused is last and time.monotonic() - at < 0.5:
                        return False   # the last press has not reached the focus yet
                    if tries >= 40:
                        raise ValueError(f"the buttons' focus never reached {step['target']!r} on {self.ctl.screen}")
                    self._button_tries[id(step)] = (tries + 1, nav.focused, time.monotonic())
                    self._button("next")
                    return False
                if step.get("enter", True):
                    self._button("enter")
                return True
            for _ in range(40):
                if nav.focused is not None and nav.focused == want:   # kv ids are weak proxies
                    break
                self._key("down")
            else:
                raise ValueError(f"the keypad focus never reached {step['target']!r} on {self.ctl.screen}")
            if step.get("enter", True):
                self._key("enter")
            return True
        if kind == "button":
            for name in step["buttons"]:
                self._button(name)
            return True
        if kind == "targets":
            small = self._small_targets()
            if small:
                raise ValueError(f"touch targets under {MIN_TARGET_MM} mm on {self.ctl.screen}: {small}")
            return True
        if kind == "jack":
            jack = self.ctl.jack
            if jack is None:
                raise ValueError("no headphone jack: set [accessibility] headphone_gpio")
            pin = jack.button.pin
            pin.drive_low() if step.get("action", "in") == "in" else pin.drive_high()
            return True
        if kind == "mark":
            self.mark = self.app.hw.camera.opened_count
            return True
        if kind == "sleep":
            return time.monotonic() - self.step_started >= float(step.get("seconds", 1))
        if kind == "screenshot":
            _log.info("screenshot %s: state %s snap %s", step.get("label"), self.ctl.state,
                      {k: self.ctl.snap.get(k) for k in ("stepup_required", "stepup_ok", "guidance")})
            if self.recorder:
                self.recorder.shoot(step.get("label", "shot"))
            return True
        return False

    def _show_presentation(self, step: dict) -> bool:
        """Play the rendered presentation for the side the screen asks, once the arrow shows."""
        ready = self._presentations.get(step)
        side = self.ctl.challenge
        if ready is None or not side:
            return False  # still rendering, or the shopper waits for the arrow
        self.app.hw.camera.show(ready[side])
        self._presentations.release(self.i)   # the camera holds what it shows; nothing later shows this one
        return True

    # -- expectations -------------------------------------------------------------------------
    def _check(self) -> None:
        self.failures += check_expectations(
            self.expect, term=self.app.term, camera=self.app.hw.camera, visited=self.visited, mark=self.mark,
            screen=self.ctl.screen, camera_on=self.ctl.camera_on, spoken=self.ctl.speaker.log_lines(),
            touches=self.touches)

    def _finish(self):
        if getattr(self, "_finished", False):
            return
        self._finished = True
        self._ev.cancel()

        def really(dt):
            self._check()
            fps = sorted(f for f in self.fps_during_scan if f > 0)
            result = {"scenario": self.data.get("name", self.path.stem), "passed": not self.failures,
                      "failures": self.failures, "screens": self.visited,
                      "window": list(Window.size),
                      "ui_fps_during_scan_median": fps[len(fps) // 2] if fps else None,
                      "screenshots": self.recorder.files if self.recorder else [],
                      "rejected_events": [str(r) for r in self.ctl.refusals],
                      "spoken": self.ctl.speaker.log_lines(), "cues": self.ctl.speaker.cues(),
                      "keys_pressed": self.keys_pressed, "buttons_pressed": self.buttons_pressed, "touches": self.touches}
            if self.recorder:
                (self.recorder.folder / "result.json").write_text(json.dumps(result, indent=1))
            for f in self.failures:
                _log.error("scenario: %s", f)
            print(json.dumps({k: result[k] for k in ("scenario", "passed", "failures", "ui_fps_during_scan_median")}))
            self.app.exit_code = 0 if not self.failures else 1
            self.app.stop()

        # wait for pending screenshots and the camera to settle
        Clock.schedule_once(really, 1.2)

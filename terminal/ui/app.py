"""The Kivy kiosk application: window, fonts, screens, scenario runner and systemd pings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..consent import ASSETS
from ..errors import HardwareError

_log = logging.getLogger(__name__)

KV_DIR = ASSETS / "kv"
FONT_CANDIDATES = [
    ASSETS / "fonts" / "NotoSansCJK-Regular.ttc",
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
]


def find_font() -> Path:
    """A font covering Latin and CJK, so the Chinese consent text renders; a clear error if none."""
    for p in FONT_CANDIDATES:
        if p.is_file():
            return p
    raise HardwareError(
        "no font with Chinese characters found", "fonts",
        "apt-get install fonts-noto-cjk (the README's apt line), or put NotoSansCJK-Regular.ttc in "
        "the checkout's assets/fonts/ (an installed package's terminal/assets/fonts/)",
    )


def _prepare_kivy(size, fullscreen: bool) -> None:
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "MIXED")
    from kivy.config import Config
    from kivy.logger import Logger

    Logger.setLevel(logging.DEBUG if os.environ.get("FACEPAY_DEBUG") else logging.WARNING)

    w, h = size or (800, 480)
    Config.set("graphics", "width", str(w))
    Config.set("graphics", "height", str(h))
    Config.set("graphics", "resizable", "0")
    if fullscreen:
        Config.set("graphics", "fullscreen", "auto")
        Config.set("graphics", "show_cursor", "0")
    # the on-screen keyboard docks under a text field whenever one has the focus, windowed or not
    Config.set("kivy", "keyboard_mode", "systemanddock")
    Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("kivy", "exit_on_escape", "0" if fullscreen else "1")


def run_kiosk(ctx, demo: bool, size=None, script: str | None = None, screenshots: str | None = None,
              fullscreen: bool = False) -> int:
    from ..hardware import build_hardware, demo_config, ensure_demo_shopper
    from ..service import Terminal

    font = find_font()
    if not os.environ.get("SDL_VIDEODRIVER"):
        from ..doctor import check_display

        display = check_display()
        if not display.ok:
            raise HardwareError(display.detail, "display", "run it on the terminal's screen, under xvfb-run for "
                                "tests, or set SDL_VIDEODRIVER (the systemd unit sets kmsdrm)")
    cfg = demo_config(ctx.cfg) if demo else ctx.cfg
    if screenshots and not demo:  # `facepay run` refuses it first, with the reason (cli.cmd_run)
        raise ValueError("--screenshots needs --demo")
    term = Terminal(cfg, ctx.data_dir, channel="kiosk")
    ctx._term = term
    recovered = term.recover()
    if recovered:
        _log.info("recovered %d sale(s) left in flight: %s", len(recovered), recovered)
    if demo:
        term.channel = "demo"  # the demo's seeded shopper is recorded as such, not as a kiosk consent
        ensure_demo_shopper(term)
        term.channel = "kiosk"
    hw = build_hardware(cfg, term.data_dir)
    _prepare_kivy(size, fullscreen)
    try:
        if demo and cfg.liveness.required:
            from ..testing.scenario import load_scenario, shows_own_presentations

            # a script that shows its own rendered turns or prints needs no demo shopper (it would step aside)
            if script is None or not shows_own_presentations(load_scenario(Path(script)).get("steps", [])):
                from ..hardware import DEMO_SHOPPER
                from ..testing.shopper import DemoShopper

                hw.shopper = DemoShopper(DEMO_SHOPPER / "1.jpg", cfg.camera.fps)   # turns the way the screen asks
        app = _make_app_class()(term, hw, demo=demo, font=str(font), script=script, screenshots=screenshots)
        app.run()
        return app.exit_code
    finally:
        hw.close()


def _make_app_class():
    from kivy.app import App
    from kivy.clock import Clock
    from kivy.core.text import LabelBase
    from kivy.core.window import Window
    from kivy.factory import Factory
    from kivy.lang import Builder
    from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
    from kivy.uix.boxlayout import BoxLayout
    from kivy.uix.screenmanager import NoTransition, ScreenManager  # noqa: F401

    from .. import i18n, sdnotify
    from ..buttons import GpioButtons, pins_of
    from .controller import KioskController
    from .keys import KeyNav
    from .screens import SCREENS, Preview, screen_classes
    from .theme import HIGH_CONTRAST, LARGE_TEXT, NORMAL

    class KioskRoot(BoxLayout):
        """Every touch passes here first: a touch just after the screen changed is dropped (it was aimed
        at the screen before), and a touch held LONG_PRESS_S switches speech on or off."""

        ctl = ObjectProperty(None)
        GUARD_S = 0.3
        LONG_PRESS_S = 2.0

        def on_touch_down(self, touch):
            import time

            if time.monotonic() - getattr(self, "changed_at", 0.0) < self.GUARD_S:
                return True
            ev = Clock.schedule_once(lambda dt: self._long_press(touch), self.LONG_PRESS_S)
            touch.ud["facepay_long_press"] = ev
            return super().on_touch_down(touch)

        def on_touch_up(self, touch):
            ev = touch.ud.pop("facepay_long_press", None)
            if ev is not None:
                ev.cancel()
            return super().on_touch_up(touch)

        def _long_press(self, touch):
            touch.ud.pop("facepay_long_press", None)
            self.ctl.toggle_speech()

    Factory.register("KioskRoot", cls=KioskRoot)
    if "Preview" not in Factory.classes:
        Factory.register("Preview", cls=Preview)
    if "QrCode" not in Factory.classes:
        from .qr import QrCode

        Factory.register("QrCode", cls=QrCode)

    class KioskApp(App):
        ctl = ObjectProperty(None)
        font = StringProperty("Roboto")
        currency = StringProperty("EUR")
        scale = NumericProperty(1.0)
        root_width = NumericProperty(800)
        lang = StringProperty("en")
        th = ObjectProperty(NORMAL, rebind=True)   # the palette (terminal/ui/theme.py): every kv colour is one of its roles
        big = BooleanProperty(False)      # the large-text half of the high-contrast large-text mode
        focus_rect = ListProperty([0, 0, 0, 0])
        title = "facepay"

        def __init__(self, term, hw, demo=False, font="", script=None, screenshots=None, **kw):
            self.term, self.hw, self.demo = term, hw, demo
            self.script_path, self.screenshots = script, screenshots
            self.exit_code = 0
            super().__init__(**kw)
            LabelBase.register(name="Facepay", fn_regular=font)
            self.font = "Facepay"
            self.currency = term.cfg.payment.currency

        def fs(self, px: float, big: bool = False) -> float:
            """A font size in pixels designed for 800x480, scaled to this screen (and up in large-text mode;
            kv passes ``app.big`` so the size follows the mode)."""
            return px * self.scale * (LARGE_TEXT if big else 1.0)

        def t(self, lang: str, msgid: str, **params) -> str:
            """``msgid`` in the shopper's language; kv passes ``app.lang`` so the text follows a change."""
            return i18n._(msgid, lang, **params)

        def _contrast(self, *a):
            self.th = HIGH_CONTRAST if self.ctl.high_contrast else NORMAL
            self.big = self.ctl.high_contrast
            if self.root is not None:
                self._rebuild()

        def _resize(self, *a):
            w, h = Window.size
            self.scale = max(1.0, min(w / 800.0, h / 480.0))
            self.root_width = w

        def build(self):
            self._resize()
            Window.bind(size=self._resize)
            self.ctl = KioskController(self.term, self.hw, demo=self.demo)
            self.lang = self.ctl.lang
            self.ctl.bind(lang=lambda _, v: setattr(self, "lang", v), high_contrast=self._contrast)
            Builder.load_file(str(KV_DIR / "shell.kv"))
            classes = screen_classes()
            for name in SCREENS:
                Factory.register(classes[name].__name__, cls=classes[name])
                Builder.load_file(str(KV_DIR / f"{name}.kv"))
            self._classes = classes
            root = self._build_root()

            def show(_, name):
                import time

                self.root.changed_at = time.monotonic()
                self.sm.current = name

            self.ctl.bind(screen=show)
            self.keys = KeyNav(self)
            self.buttons = None
            pins = pins_of(self.ctl.term.cfg.accessibility)
            if pins:   # GPIO push buttons: a second keypad, on the LEDs' pin factory (MockFactory in the demo)
                self.buttons = GpioButtons(pins, lambda a: Clock.schedule_once(lambda dt: self.keys.action(a), 0),
                                           pin_factory=getattr(self.hw.leds, "pin_factory", None))
            return root

        def _build_root(self):
            root = KioskRoot(ctl=self.ctl)
            sm = root.ids.sm
            sm.transition = NoTransition()
            self.screens = {}
            for name in SCREENS:
                scr = self._classes[name](name=name, ctl=self.ctl)
                self.screens[name] = scr
                sm.add_widget(scr)
            sm.current = self.ctl.screen
            self.sm = sm
            return root

        def _rebuild(self):
            """Build every widget afresh in the new mode (kv rules then size and colour everything from the
            start, with no rule of a base class left to fire after its subclass's); typed text carries over."""
            from kivy.uix.textinput import TextInput

            typed = {(n, k): w.text for n, scr in self.screens.items() for k, w in scr.ids.items()
                     if isinstance(w, TextInput)}
            old = self.root
            new = self._build_root()
            for (n, k), text in typed.items():
                self.screens[n].ids[k].text = text
            Window.remove_widget(old)
            Window.add_widget(new)
            self.root = new
            self.keys.focused = None

        def on_start(self):
            import signal

            # systemd stops the kiosk with SIGTERM: leave through Kivy's own stop, so on_stop cleans up
            signal.signal(signal.SIGTERM, lambda *a: Clock.schedule_once(lambda dt: self.stop(), 0))
            sdnotify.notify("READY=1")
            interval = sdnotify.watchdog_interval()
            if interval:
                Clock.schedule_interval(lambda dt: sdnotify.notify("WATCHDOG=1"), interval)
            if self.script_path:
                from .scenario import ScenarioPlayer

                self.player = ScenarioPlayer(self, Path(self.script_path), self.screenshots)
                self.player.start()
            elif self.screenshots:
                from .scenario import ScreenRecorder

                self.recorder = ScreenRecorder(self, Path(self.screenshots))

        def on_stop(self):
            sdnotify.notify("STOPPING=1")
            if getattr(self, "buttons", None) is not None:
                self.buttons.close()
            self.ctl.shutdown()

    return KioskApp

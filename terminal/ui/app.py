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
        "apt-get install fonts-noto-cjk (the README's apt line), or put NotoSansCJK-Regular.ttc in terminal/assets/fonts/",
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
            from .scenario import load_scenario, shows_own_presentations

            # a script that shows its own rendered turns or prints needs no demo shopper (it would step aside)
            if script is None or not shows_own_presentations(load_scenario(Path(script)).get("steps", [])):
                from ..face.synth import DemoShopper
                from ..hardware import DEMO_SHOPPER

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
    from kivy.properties import NumericProperty, ObjectProperty, StringProperty
    from kivy.uix.boxlayout import BoxLayout
    from kivy.uix.screenmanager import NoTransition, ScreenManager  # noqa: F401

    from .. import sdnotify
    from .controller import KioskController
    from .screens import SCREENS, Preview, screen_classes

    class KioskRoot(BoxLayout):
        ctl = ObjectProperty(None)

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
        title = "facepay"

        def __init__(self, term, hw, demo=False, font="", script=None, screenshots=None, **kw):
            self.term, self.hw, self.demo = term, hw, demo
            self.script_path, self.screenshots = script, screenshots
            self.exit_code = 0
            super().__init__(**kw)
            LabelBase.register(name="Facepay", fn_regular=font)
            self.font = "Facepay"
            self.currency = term.cfg.payment.currency

        def fs(self, px: float) -> float:
            """A font size in pixels designed for 800x480, scaled to this screen."""
            return px * self.scale

        def _resize(self, *a):
            w, h = Window.size
            self.scale = max(1.0, min(w / 800.0, h / 480.0))
            self.root_width = w

        def build(self):
            self._resize()
            Window.bind(size=self._resize)
            self.ctl = KioskController(self.term, self.hw, demo=self.demo)
            Builder.load_file(str(KV_DIR / "shell.kv"))
            classes = screen_classes()
            for name in SCREENS:
                Factory.register(classes[name].__name__, cls=classes[name])
                Builder.load_file(str(KV_DIR / f"{name}.kv"))
            root = KioskRoot(ctl=self.ctl)
            sm = root.ids.sm
            sm.transition = NoTransition()
            self.screens = {}
            for name in SCREENS:
                scr = classes[name](name=name, ctl=self.ctl)
                self.screens[name] = scr
                sm.add_widget(scr)
            sm.current = self.ctl.screen
            self.ctl.bind(screen=lambda _, name: setattr(sm, "current", name))
            self.sm = sm
            return root

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
            self.ctl.shutdown()

    return KioskApp

"""Building the terminal's hardware from its config: camera, card reader, LEDs.

The config's defaults are the real parts (Pi camera, PN532 on ``/dev/serial0``,
GPIO LEDs).  ``run --demo`` (:func:`demo_config`) swaps in the simulated parts
that ship with the project: the replay camera on the demo faces, the PN532
simulator on a pseudo-terminal (``<data dir>/pn532``) and gpiozero's
MockFactory LEDs; a config may also name them itself.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
from dataclasses import dataclass
from pathlib import Path

from .camera import Camera, make_camera
from .config import Config
from .consent import ASSETS
from .leds import LedBoard

_log = logging.getLogger(__name__)

DEMO_CAMERA = ASSETS / "demo" / "camera"
DEMO_SHOPPER = ASSETS / "demo" / "shopper"
DEMO_NEWCOMER = ASSETS / "demo" / "newcomer"
DEMO_CARD = bytes.fromhex("04A1B2C3")
DEMO_OTHER_CARD = bytes.fromhex("04D5E6F7")
DEMO_PHONE = "1234"


@dataclass
class Hardware:
    camera: Camera
    leds: LedBoard
    reader: object | None          # firmware_bridge.service.ReaderService
    sim: object | None             # firmware_bridge.sim.PN532Simulator (demo)
    events: queue.Queue
    shopper: object | None = None  # terminal.testing.shopper.DemoShopper: the demo's simulated shopper
    camera_fault: str | None = None    # the camera's last failure in this run; None after it opened again
    camera_opened_at: float | None = None

    def camera_seen(self, fault: str | None) -> None:
        """The kiosk reports each camera opening: None when it worked, else what failed."""
        self.camera_fault = fault
        if fault is None:
            self.camera_opened_at = time.time()

    def health(self) -> dict:
        """Reader and camera as this running kiosk knows them (for the fleet agent's heartbeat)."""
        sim = " (simulated)" if self.sim is not None else ""
        if self.reader is None:
            reader = "not configured"
        elif self.reader.connected and self.reader.firmware:
            fw = self.reader.firmware
            reader = f"ok: PN5{fw[0]:02X} firmware {fw[1]}.{fw[2]}, polling{sim}"
        else:
            reader = f"FAIL: {self.reader.lost_reason or 'not connected yet'}"
        if self.camera_fault is not None:
            camera = f"FAIL: {self.camera_fault}"
        elif self.camera_opened_at is not None:
            camera = ("ok: last opened " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.camera_opened_at))
                      + (" (replay)" if self.camera.describe().get("backend") == "replay" else ""))
        else:
            camera = "ok so far: not opened since the kiosk started (it opens only for a scan)"
        return {"reader": reader, "camera": camera}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        if self.sim is not None:
            self.sim.stop()
        self.camera.close()
        self.leds.close()


def demo_config(cfg: Config) -> Config:
    """The config with every hardware part simulated."""
    return dataclasses.replace(
        cfg,
        camera=dataclasses.replace(cfg.camera, backend="replay", replay_path=cfg.camera.replay_path or str(DEMO_CAMERA)),
        leds=dataclasses.replace(cfg.leds, backend="mock"),
        reader=dataclasses.replace(cfg.reader, port="sim"),
    )


def build_hardware(cfg: Config, data_dir: Path) -> Hardware:
    from firmware_bridge.service import ReaderService

    camera = make_camera(cfg.camera, replay_default=str(DEMO_CAMERA))
    leds = LedBoard(cfg.leds)
    events: queue.Queue = queue.Queue()
    sim = None
    port = cfg.reader.port
    if port == "sim":
        from firmware_bridge.sim import PN532Simulator

        sim = PN532Simulator(data_dir / "pn532").start()
        port = str(sim.link)
    reader = ReaderService(port, events, baudrate=cfg.reader.baudrate, poll_timeout=cfg.reader.poll_interval_s).start()
    return Hardware(camera, leds, reader, sim, events)


def ensure_demo_shopper(term) -> str | None:
    """Enrol the demo shopper from the demo photos on first start; returns their id."""
    from . import consent
    from .face.images import load_rgb

    shopper = term.store.by_card(DEMO_CARD)
    if shopper is not None:
        return shopper.id
    embeddings = []
    for photo in sorted(DEMO_SHOPPER.glob("*.jpg")):
        a = term.pipeline.analyse(load_rgb(photo))
        if a.gate.ok:
            embeddings.append(a.embedding)
    shopper = term.enrol(name="Barack Obama", card_uid=DEMO_CARD, embeddings=embeddings,
                         consent_text=consent.load("en"), phone_last4=DEMO_PHONE)
    _log.info("demo shopper enrolled: %s, card %s (the demo tray's first card)", shopper.id, shopper.card_mask)
    return shopper.id

"""A side machine: whether the terminal can take face payments now (mode, reader, camera, fleet pause).

It runs beside the flows in every state: its events (``SetMode``, ``ReaderStatus``, ``FleetStatus``,
``CameraFault``, ``CameraRestored``) are valid anywhere except where a flow says otherwise, and it
answers :attr:`Availability.face_pay_on`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .context import Context, Handler, Step, Table, close_camera, gallery_effects, go, idle_pattern, result, to_idle
from .messages import (
    CameraFault,
    CameraRestored,
    FleetStatus,
    Leds,
    PersistMode,
    ReaderStatus,
    Record,
    Rejected,
    SetMode,
)
from .policy import FACE_OFF_MODES, MODES, Mode
from .states import State


@dataclass(frozen=True)
class Availability:
    mode: Mode = Mode.NORMAL
    face_pay_config: bool = True   # [terminal] face_pay
    reader_ok: bool = True
    camera_ok: bool = True
    fleet_paused: bool = False     # in a fleet and behind on its revocations: card only

    @property
    def face_pay_on(self) -> bool:
        return self.face_pay_config and not self.fleet_paused and self.mode not in FACE_OFF_MODES

    def idle_pattern(self) -> str:
        if self.mode == Mode.OUT_OF_SERVICE or not self.reader_ok or not self.camera_ok:
            return "fault"
        return "idle"


def set_mode(c: Context, e: SetMode) -> Step:
    """A new mode; one changed here (not already by another process: ``record``) is stored, then recorded."""
    if e.mode not in MODES:
        raise Rejected(f"unknown mode {e.mode!r}")
    was_on, old = c.avail.face_pay_on, c.avail.mode
    c = replace(c, avail=replace(c.avail, mode=Mode(e.mode)))
    eff = [PersistMode(e.mode), Record("mode_changed", "", {"from": str(old), "to": e.mode})] if e.record else []
    eff += gallery_effects(was_on, c)
    c, more = to_idle(c)
    return c, eff + more


def fleet_status(c: Context, e: FleetStatus) -> Step:
    was_on = c.avail.face_pay_on
    c = replace(c, avail=replace(c.avail, fleet_paused=e.paused))
    return c, gallery_effects(was_on, c)


def reader_status(c: Context, e: ReaderStatus) -> Step:
    c = replace(c, avail=replace(c.avail, reader_ok=e.ok))
    return c, [Leds(idle_pattern(c))] if c.state in (State.IDLE, State.OUT_OF_SERVICE) else []


def camera_fault(c: Context, e: CameraFault) -> Step:
    c = replace(c, avail=replace(c.avail, camera_ok=False))
    if c.state == State.FACE_SCAN:
        c, eff = close_camera(c)
        return go(c, State.AMOUNT_DUE, message="camera_fault"), eff + [Leds("fault")]
    if c.state == State.ENROL_CAPTURE:
        return result(c, State.ENROL_FAILED, "camera_fault", "fault")
    return c, [Leds("fault")] if c.state == State.IDLE else []


def camera_restored(c: Context, e: CameraRestored) -> Step:
    """The camera answers again: face steps may start; at rest the fault light goes out."""
    was = c.avail.camera_ok
    c = replace(c, avail=replace(c.avail, camera_ok=True))
    if not was and c.state in (State.IDLE, State.OUT_OF_SERVICE):
        return c, [Leds(idle_pattern(c))]
    return c, []


# Valid in every state (SetMode only at rest: the machine's table says so).
ANY_STATE: dict[type, Handler] = {FleetStatus: fleet_status, ReaderStatus: reader_status, CameraFault: camera_fault,
             CameraRestored: camera_restored}
TABLE: Table = {State.IDLE: {SetMode: set_mode}, State.OUT_OF_SERVICE: {SetMode: set_mode}}

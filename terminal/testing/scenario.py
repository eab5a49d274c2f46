"""Kiosk scenarios (tests/scenarios/*.toml): the file, the rendered material it shows, its expectations.

The pure part of the scenario player (``facepay run --demo --script FILE``): what a file may say, the
head turns and prints it shows (rendered here, kept compressed), and the check of its ``[expect]``
against the terminal's records.  The Kivy driving (touches, keys, screenshots) is :mod:`terminal.ui.scenario`.

A scenario file::

    name = "face payment confirmed"
    [[steps]]
    do = "press"            # press a widget by its kv id on the current screen (or the strip/tray)
    target = "staff"
    [[steps]]
    do = "keys"             # press keypad keys by their label
    keys = "2580"
    [[steps]]
    do = "wait"             # wait until this screen shows
    screen = "pay"
    [[steps]]
    do = "tap_card"         # "shopper", "other", "random" (a phone) or a hex UID, through the simulator
    card = "shopper"
    [[steps]]
    do = "type"             # put text in a TextInput
    target = "name"
    text = "Kit Harington"
    [[steps]]
    do = "camera"           # point the replay camera at a demo folder: camera | newcomer | empty | unplugged
    source = "newcomer"     # ("empty" also waits until the scenario's rendered presentations are ready)
    [[steps]]
    do = "camera"           # a simulated shopper: waits for the on-screen challenge, then shows a head turn
    source = "turn"         # ("turn", rendered from the photo's own mesh) or a print of the photo turned
    photo = "shopper"       # the same way ("print"), or a print bent outward on a cylinder and turned
                            # ("bent_print"); photo: shopper | newcomer | a path from the scenario file
    [[steps]]
    do = "mark"             # remember the camera-open count for camera_opens_since_mark
    [[steps]]
    do = "reader"           # the simulated reader's cable: "unplug" or "replug"
    action = "unplug"
    [[steps]]
    do = "see"              # wait until a widget (by kv id) shows this text, as a person would read it
    target = "reader_state" # (exact = true: shows exactly this text; text = "" and exact: an empty field)
    text = "Card payment unavailable"
    [[steps]]
    do = "cli"              # a technician's `facepay ...` on the same data folder, in another process
    args = ["mode", "card_only"]
    [[steps]]
    do = "preview"          # shown = false: no camera picture is kept or drawn on any screen, now
    shown = false
    [[steps]]
    do = "key"              # keys of a USB numeric keypad, through Kivy's keyboard dispatch:
    keys = ["down", "enter", "4", "plus"]   # up down left right tab enter 0-9 dot plus minus star slash backspace
    [[steps]]
    do = "key_to"           # press "down" (as a blind shopper listening to each button's name) until the
    target = "confirm"      # focus is on this widget, then Enter (enter = false: only move there)
    [[steps]]
    do = "targets"          # every button on screen is at least 9 mm on the 7" display (154.2 mm wide)
    [[steps]]
    do = "button"           # GPIO push buttons (needs [accessibility] button_*_gpio): each pressed and let go
    buttons = ["next", "enter"]   # prev next enter back more_time
    [[steps]]
    do = "key_to"           # with via = "buttons": the GPIO next button moves the focus, its enter presses
    target = "confirm"
    via = "buttons"
    [[steps]]
    do = "jack"             # the headphone jack's switch (needs [accessibility] headphone_gpio): in | out
    action = "in"
    [expect]
    screens = ["attract", "pay", "scan", "consent", "result"]   # visited in this order
    never_screens = ["consent"]                                 # never shown
    sales = {approved = 1}
    charges = 1
    channels = {charge_confirmed = "kiosk"}   # every event of that kind came through that channel
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import InputError
from ..hardware import DEMO_NEWCOMER, DEMO_SHOPPER
from .clips import JpegClip

STEP_KINDS = {"press", "keys", "wait", "tap_card", "type", "camera", "mark", "sleep", "screenshot", "reader", "see",
              "cli", "preview", "key", "key_to", "targets", "jack", "button"}
EXPECT_KEYS = {"screens", "never_screens", "sales", "charges", "face_charges", "card_charges", "ledger", "shoppers",
               "camera_opens", "camera_opens_since_mark", "receipts", "final_screen", "mode", "channels", "spoken",
               "no_touches"}
DISPLAY_WIDTH_MM = 154.2     # the Raspberry Pi Touch Display's active area is 154.2 x 85.9 mm for 800 x 480
MIN_TARGET_MM = 9.0
PRESENTATIONS = ("turn", "print", "bent_print")   # camera sources the player renders itself


def as_read(text: str) -> str:
    """Text as a person reads it: CLDR's no-break spaces ("4,20\u00a0€") are spaces."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def shows_own_presentations(steps: list[dict]) -> bool:
    """The script puts its own rendered head turns or prints in front of the camera."""
    return any(st.get("do") == "camera" and st.get("source") in PRESENTATIONS for st in steps)


def load_scenario(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the scenario: {exc}", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the scenario is not valid TOML: {exc}", str(path)) from None
    steps = data.get("steps", [])
    for i, s in enumerate(steps, 1):
        if s.get("do") not in STEP_KINDS:
            raise InputError(f"step {i}: 'do' must be one of {', '.join(sorted(STEP_KINDS))}", str(path))
    unknown = set(data.get("expect", {})) - EXPECT_KEYS
    if unknown:
        raise InputError(f"unknown expectation(s): {', '.join(sorted(unknown))}", str(path))
    return data


def presentation_key(step: dict) -> tuple[str, str]:
    """What a camera step shows: (source, photo)."""
    return step.get("source"), step.get("photo", "shopper")


class Presentations:
    """Every head turn or turned print a scenario shows, for both sides, rendered before the scan needs it.

    The material is made with its own face models (:mod:`terminal.testing.synth`, in a child process:
    :mod:`terminal.testing.render`) so the simulated shopper turns as soon as the arrow shows, and kept
    JPEG-compressed (:class:`~terminal.testing.clips.JpegClip`: decoded frame by frame as the replay camera
    reads it).
    :meth:`release` lets a presentation go once no later step shows it.
    """

    def __init__(self, steps: list[dict], scenario_dir: Path, fps: float):
        self.steps, self.scenario_dir, self.fps = steps, scenario_dir, fps
        self._ready: dict[tuple[str, str], dict[str, JpegClip] | Exception] = {}

    def render(self) -> None:
        """Render them all (in a child process, :mod:`terminal.testing.render`); a photo without a usable
        face, or a failed render, is kept as the error its steps raise."""
        from .render import render

        keys, jobs = [], []
        for step in self.steps:
            key = presentation_key(step)
            if step.get("do") != "camera" or key[0] not in PRESENTATIONS or key in keys:
                continue
            folder = {"shopper": DEMO_SHOPPER, "newcomer": DEMO_NEWCOMER}.get(key[1])
            photo = sorted(folder.glob("*.jpg"))[0] if folder else self.scenario_dir / key[1]
            keys.append(key)
            jobs.append({"recipe": key[0], "photo": photo})
        if not jobs:
            return
        try:
            results: list = render(jobs, self.fps)
        except Exception as exc:   # the child failed as a whole: every presentation step says why
            results = [exc] * len(jobs)
        self._ready.update(zip(keys, results))

    def get(self, step: dict) -> dict[str, JpegClip] | None:
        """Both sides of this step's presentation, or None while it is still rendering; a render failure raises."""
        ready = self._ready.get(presentation_key(step))
        if isinstance(ready, Exception):
            raise ready
        return ready

    def held(self) -> list[JpegClip]:
        """The rendered clips held now (for benchmarks/memory.py)."""
        return [clip for sides in list(self._ready.values()) if isinstance(sides, dict) for clip in sides.values()]

    def release(self, shown_at: int) -> None:
        """Let the presentation of step ``shown_at`` go if no later step shows it (the camera holds what it shows)."""
        key = presentation_key(self.steps[shown_at])
        if not any(s.get("do") == "camera" and presentation_key(s) == key for s in self.steps[shown_at + 1:]):
            self._ready.pop(key, None)


def check_expectations(expect: dict, *, term, camera, visited: list[str], mark: int, screen: str, camera_on: bool,
                       spoken: list[str], touches: int) -> list[str]:
    """What did not hold of a scenario's ``[expect]``, read from the terminal's journal, processor ledger,
    consent ledger and store and from the camera device: one line per failure (empty: all held)."""
    e, t = expect, term
    failures: list[str] = []
    fail = failures.append
    if "screens" in e:
        it = iter(visited)
        missing = [s for s in e["screens"] if not any(v == s for v in it)]
        if missing:
            fail(f"screens {e['screens']} not visited in order; visited {visited}")
    shown = [s for s in e.get("never_screens", []) if s in visited]
    if shown:
        fail(f"screens {shown} must not be shown; visited {visited}")
    sales = t.journal.sales()
    if "sales" in e:
        for status, n in e["sales"].items():
            got = sum(1 for s in sales if s.status == status)
            if got != n:
                fail(f"expected {n} {status} sale(s) in the journal, found {got}")
    charges = [c for c in t.processor.charges() if c["kind"] == "charge"]
    if "charges" in e and len(charges) != e["charges"]:
        fail(f"expected {e['charges']} charge(s) at the processor, found {len(charges)}")
    by_key = {s.key: s for s in sales}
    for key, method in (("face_charges", "face"), ("card_charges", "card")):
        if key in e:
            got = sum(1 for c in charges if by_key.get(c["key"]) and by_key[c["key"]].method == method)
            if got != e[key]:
                fail(f"expected {e[key]} {method} charge(s), found {got}")
    if any(s.status == "pending" for s in sales):
        fail("a sale is still pending")
    kinds = [ev.kind for ev in t.ledger.events()]
    for kind, n in e.get("ledger", {}).items():
        if kinds.count(kind) != n:
            fail(f"expected {n} {kind} ledger event(s), found {kinds.count(kind)}")
    for kind, channel in e.get("channels", {}).items():  # where each recorded consent came from
        got = {ev.details.get("channel") for ev in t.ledger.events(kind=kind)}
        if got != {channel}:
            fail(f"expected every {kind} ledger event to come through {channel}, found {sorted(map(str, got))}")
    if not t.ledger.verify().ok:
        fail("the consent ledger does not verify")
    if "shoppers" in e and t.store.count() != e["shoppers"]:
        fail(f"expected {e['shoppers']} enrolled shopper(s), found {t.store.count()}")
    if "receipts" in e:
        n = t.store.db.execute("SELECT COUNT(*) FROM deletion_receipts").fetchone()[0]
        if n != e["receipts"]:
            fail(f"expected {e['receipts']} deletion receipt(s), found {n}")
    opened = camera.opened_count  # the device itself, whoever opened it
    if "camera_opens" in e and opened != e["camera_opens"]:
        fail(f"expected the camera to open {e['camera_opens']} time(s), it opened {opened}")
    if "camera_opens_since_mark" in e:
        since = opened - mark
        if since != e["camera_opens_since_mark"]:
            fail(f"expected {e['camera_opens_since_mark']} camera opening(s) after the mark, saw {since}")
    if "final_screen" in e and screen != e["final_screen"]:
        fail(f"expected to end on {e['final_screen']}, ended on {screen}")
    if "mode" in e and t.mode() != e["mode"]:
        fail(f"expected mode {e['mode']}, found {t.mode()}")
    if camera_on or camera.is_open:
        fail("the camera is still open at the end")
    said = as_read("\n".join(spoken))
    for line in e.get("spoken", []):   # what a blind shopper heard (the speaker's own log)
        if line not in said:
            fail(f"never spoken: {line!r}")
    if e.get("no_touches") and touches:
        fail(f"expected no touch at all, the script touched the screen {touches} time(s)")
    return failures

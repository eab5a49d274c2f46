"""A side machine: the camera scan (its token, the head-turn challenge handed in, liveness strikes, cool-down).

Every opening of the camera gets a new token (``OpenCamera.scan``); the challenge side comes in the
event that opens it (drawn by the driver, never here).  ``LIVENESS_STRIKES`` failed challenges in a
row start a cool-down, ended by ``CooldownOver`` with its token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..face.decisions import CHALLENGES
from .context import Context, Handler, Step, Table
from .messages import (
    CooldownOver,
    FaceGuidance,
    LivenessFailed,
    LivenessPassed,
    MoreTime,
    OpenCamera,
    Record,
    Rejected,
    StartCooldown,
)
from .states import CAMERA_STATES

CHALLENGE_MORE_MAX = 3     # "More time" for one head turn at most this often (EN 301 549 5.2: at least twice)
LIVENESS_STRIKES = 3       # failed liveness challenges in a row before the cool-down


@dataclass(frozen=True)
class ScanCtx:
    camera_open: bool = False
    token: int = 0                 # the current (or last) opening's token
    challenge: str | None = None   # the head turn asked of the shopper in this scan
    live: bool = False             # the challenge was passed in this scan
    more: int = 0                  # "More time" for this scan's head turn: extra [liveness] windows
    strikes: int = 0               # failed challenges in a row
    cooldown: int = 0              # token of the running face-pay cool-down, 0 when none
    cooldown_token: int = 0

    def opened(self, purpose: str, challenge: str | None, liveness_required: bool) -> tuple[ScanCtx, OpenCamera]:
        if challenge is not None and challenge not in CHALLENGES:
            raise Rejected(f"the challenge must be left or right, not {challenge!r}")
        if liveness_required and challenge is None:
            raise Rejected("the head-turn side must be handed in with the event (left or right)")
        s = replace(self, camera_open=True, token=self.token + 1, live=False, more=0,
                    challenge=challenge if liveness_required else None)
        return s, OpenCamera(purpose, s.token, s.challenge)

    def closed(self) -> ScanCtx:
        return replace(self, camera_open=False, challenge=None, live=False)


def more_time(c: Context, e: MoreTime) -> Step:
    s = c.scan
    if s.challenge is None or s.live:
        raise Rejected("no head turn is asked for now")
    if s.more >= CHALLENGE_MORE_MAX:
        raise Rejected("no more time can be added to the head turn")
    return replace(c, scan=replace(s, more=s.more + 1)), []


def guidance(c: Context, e: FaceGuidance) -> Step:
    return replace(c, guidance=e.reason), []


def liveness_passed(c: Context, e: LivenessPassed) -> Step:
    if c.scan.challenge is None:
        raise Rejected("no challenge was asked in this scan")
    return replace(c, scan=replace(c.scan, live=True, strikes=0), guidance=None), []


def liveness_failed(purpose: str, end: Callable[[Context, LivenessFailed, str], Step]):
    """The handler for a failed challenge in a ``purpose`` scan; ``end(ctx, event, challenge)`` ends that flow's
    scan.  A strike is recorded; the ``LIVENESS_STRIKES``-th in a row starts the cool-down."""

    def handler(c: Context, e: LivenessFailed) -> Step:
        s = c.scan
        if s.challenge is None or s.live:
            raise Rejected("no challenge is pending in this scan")
        challenge, strikes = s.challenge, s.strikes + 1
        c = replace(c, scan=replace(s, strikes=strikes))
        eff: list = [Record("liveness_failed", "", {"reason": e.reason, "challenge": challenge, "purpose": purpose,
                                                    "strike": strikes})]
        c, more = end(c, e, challenge)
        eff += more
        if strikes >= LIVENESS_STRIKES:
            s = c.scan
            s = replace(s, strikes=0, cooldown_token=s.cooldown_token + 1, cooldown=s.cooldown_token + 1)
            c = replace(c, scan=s)
            eff += [Record("liveness_cooldown", "", {"seconds": c.policy.cooldown_s,
                                                     "after_failures": LIVENESS_STRIKES}),
                    StartCooldown(s.cooldown, c.policy.cooldown_s)]
        return c, eff

    return handler


def cooldown_over(c: Context, e: CooldownOver) -> Step:
    if e.token != c.scan.cooldown or not e.token:
        raise Rejected("no such cool-down is running")
    return replace(c, scan=replace(c.scan, cooldown=0)), []


def need_no_cooldown(c: Context, then: str) -> None:
    if c.scan.cooldown:
        raise Rejected(f"face pay is cooling down after failed liveness checks: {then}")


ANY_STATE: dict[type, Handler] = {CooldownOver: cooldown_over}
# In both camera states; LivenessFailed is the flows' own (payment.py, enrolment.py), built with liveness_failed.
TABLE: Table = {s: {MoreTime: more_time, FaceGuidance: guidance, LivenessPassed: liveness_passed} for s in CAMERA_STATES}

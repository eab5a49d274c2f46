"""What the face stages decide, in words the pure checkout machine shares, without numpy or a model.

The head-turn challenges and how one is drawn, the reason a match is too close to call, and the
false-match probability over a gallery (the step-up policy's arithmetic).  Importing the machine
(:mod:`terminal.checkout`) loads this and nothing heavier.
"""

from __future__ import annotations

import math
import secrets

CHALLENGES = ("left", "right")
# FaceNoMatch's reason when two enrolled faces are about equally close: "too close", not "not found".
TOO_CLOSE = "too close to call between two shoppers"


def pick_challenge() -> str:
    """``left`` or ``right``, decided by the operating system's CSPRNG when the scan starts."""
    return secrets.choice(CHALLENGES)


def false_match_in_gallery(f: float, n: int) -> float:
    """Probability that an unenrolled face matches somebody among ``n`` shoppers: 1 - (1 - f)^n."""
    return -math.expm1(n * math.log1p(-f)) if n > 0 else 0.0

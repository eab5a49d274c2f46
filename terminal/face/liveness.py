"""Liveness: a random head-turn challenge checked on face-mesh landmarks (presentation-attack detection).

The check is pure: it takes, frame by frame, the 468 face-mesh landmarks (x, y in full-image
pixels; z ignored), the face box, a timestamp and the frame's pixels (in memory only, for the optical
flow below), and decides.  It writes nothing and keeps nothing after the decision.

What it asks of a sequence (all of it, in order):

1. **A frontal start.**  Head yaw, from ``cv2.solvePnP`` of seven landmarks against a canonical
   3D face, smoothed by a median of three frames, within :data:`FRONTAL_MAX_DEG` of facing the
   camera.
2. **The turn happened.**  The smoothed yaw changes by at least ``min_yaw_deg`` in the challenged
   direction within ``timeout_s`` of the first face.  Direction is the shopper's own: turning to
   their *left* moves the nose toward the *right* edge of the unmirrored camera image (positive
   yaw here).  The preview's mirroring plays no part: only camera-image coordinates are used.
   A turn of ``min_yaw_deg`` the other way first fails (a replayed video turning the wrong way).
3. **It is not a sheet of paper, flat or bent.**  From the start frame on, mesh points on four chords
   through the nose tip (off the nose and the face's outline) are tracked in the image itself
   (Lucas-Kanade optical flow; the tip in a small window, see :data:`TIP_LK`), and the tip's parallax
   against a smooth curve through each chord's points is measured as the head turns (:func:`relief`).
   A head's nose stands 2-3 cm in front of the midline above and below it and of the cheeks beside it;
   a sheet, bent on a cylinder or folded, is straight along its rulings, so along the chord nearest
   them the tip moves with the sheet.  The median relief from half the asked turn to its peak must
   reach ``relief_min``.  The mesh model's own z is never used: it is a face prior and gives a photo a
   face's depth too.  The homography residual of the nose (:func:`planarity`) is still computed and
   reported; it no longer decides (a convex print runs ahead of one plane like a nose).
4. **No cut.**  Consecutive frames must be explained by smooth motion: every tracked point must follow
   the mesh and its own backward track within ``flow_max`` eye distances (a cut, a cross-fade or a
   ghost loses the tracks), the head's yaw must not change faster than ``max_yaw_rate_dps``, and at
   least ``min_turn_frames`` frames must be seen between 10% and 90% of the turn.  The face box must
   move continuously (no jump of its centre by more than :data:`MAX_JUMP` box widths, no size change
   beyond :data:`MAX_SCALE`, no stretch over :data:`MAX_GAP_S` in which frames showed no face).
   A stretch in which the terminal analysed no frame at all (it fell behind the camera: a slow frame on
   a loaded machine) is not an absence of the face: up to :data:`MAX_STALL_S` it is judged by the same
   box and image continuity, longer it starts the check over (reason ``too_slow`` if nothing follows).
   A cut starts the check over from the new face; the time limit keeps running.

The same person at the start and at the end (descriptor distance) is checked by the caller,
who holds the descriptors (see ``terminal.runner``).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .decisions import CHALLENGES, pick_challenge  # noqa: F401  (pick_challenge: liveness's public name too)

FRONTAL_MAX_DEG = 15.0     # the start pose: within this of facing the camera
SMOOTH = 3                 # frames in the yaw median
MAX_JUMP = 0.35            # face-box centre moves between two frames, in box widths
MAX_SCALE = 1.35           # face-box size ratio between two frames
MAX_GAP_S = 0.5            # longest stretch without a face before the check starts over
MAX_STALL_S = 1.0          # longest stretch in which the terminal analysed no frame at all (it fell behind)
WRONG_WAY = 2 / 3          # a turn of this share of min_yaw_deg to the other side fails the challenge
END_SIDE = 0.5             # the end pose must be this share of min_yaw_deg beyond frontal, on the asked side
SETTLE_DEG = 3.0           # after the turn passes min_yaw: the peak is over when yaw falls back this far...
SETTLE_S = 0.6             # ...or this long after the threshold was passed

# MediaPipe face-mesh indices.  "right"/"left" are the subject's own: the right eye's outer corner
# (33) is on the image's left in an unmirrored camera frame.
NOSE_TIP, CHIN = 1, 152
R_EYE_OUTER, R_EYE_INNER, L_EYE_INNER, L_EYE_OUTER = 33, 133, 362, 263
MOUTH_R, MOUTH_L = 61, 291
NOSE = (1, 2, 4, 5, 19, 94, 195, 197)   # the nose's tip and ridge: the points furthest from the face's plane
# The face's outline, in order around it: the silhouette, where the face turns away from the camera
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
_PLANE = np.setdiff1d(np.arange(468), NOSE)
# RANSAC inlier distance for the plane fit, in eye distances: points the landmark model fills in
# where it cannot see (a face cut off by a print's edge) do not follow the print's plane, and a least-
# squares fit over them moves the plane off the nose.
RANSAC_EYE = 0.05
POSE_POINTS = (NOSE_TIP, CHIN, R_EYE_OUTER, L_EYE_OUTER, MOUTH_R, MOUTH_L, R_EYE_INNER, L_EYE_INNER)

# A canonical adult face in millimetres (average anthropometry): x toward the image's right when
# the face looks into the camera, y down, z away from the camera (into the head); nose tip at 0.
CANONICAL_FACE = np.array([
    (0.0, 0.0, 0.0),          # nose tip
    (0.0, 65.0, 14.0),        # chin
    (-45.0, -32.0, 30.0),     # right eye, outer corner (image left)
    (45.0, -32.0, 30.0),      # left eye, outer corner (image right)
    (-26.0, 30.0, 20.0),      # mouth, right corner
    (26.0, 30.0, 20.0),       # mouth, left corner
    (-15.0, -30.0, 20.0),     # right eye, inner corner
    (15.0, -30.0, 20.0),      # left eye, inner corner
], dtype=np.float64)

REASONS = {
    "live": "the turn was seen and the face is not flat",
    "no_face": "no single face was seen",
    "not_frontal": "the face never looked straight at the camera first",
    "timeout": "no turn to the asked side within the time limit",
    "wrong_direction": "the head turned to the other side",
    "flat": "the face moved like a picture (a print, flat or bent, or a screen)",
    "face_lost": "the face left the picture or jumped during the challenge",
    "too_slow": "the terminal fell behind the camera and saw too little of the turn",
    "cut": "the picture changed in a way no head moves (a cut or a blend between pictures)",
    "different_person": "the face at the end of the turn is not the one at its start",
}


@dataclass(frozen=True)
class LivenessParams:
    min_yaw_deg: float = 15.0
    planarity_min: float = 0.055     # reported, no longer decides (see the module's docstring)
    timeout_s: float = 4.0
    relief_min: float = 0.097        # the nose tip out of the surface around it, eye distances
    flow_max: float = 0.08           # tracked points off the mesh or their own backward track, eye distances
    max_yaw_rate_dps: float = 300.0  # head yaw speed between two frames, degrees per second
    min_turn_frames: int = 2         # frames seen between 10% and 90% of the turn

    @classmethod
    def from_config(cls, cfg) -> "LivenessParams":
        """From a ``[liveness]`` section (terminal.config.LivenessConfig)."""
        return cls(cfg.min_yaw_deg, cfg.planarity_min, cfg.timeout_s, cfg.relief_min, cfg.flow_max,
                   cfg.max_yaw_rate_dps, cfg.min_turn_frames)


@dataclass(frozen=True)
class LivenessResult:
    live: bool
    challenge: str
    reason: str
    yaw_change_deg: float
    planarity: float
    frames: int
    # indices (in the order frames were added) of the start and end frames the decision used
    start_frame: int | None = None
    end_frame: int | None = None
    relief: float = 0.0   # the nose tip's relief over the turn (see relief()), eye distances

    def as_dict(self) -> dict:
        return {"live": self.live, "challenge": self.challenge, "reason": self.reason,
                "yaw_change_deg": round(self.yaw_change_deg, 2), "planarity": round(self.planarity, 4),
                "relief": round(self.relief, 4), "frames": self.frames}

    @property
    def words(self) -> str:
        return REASONS.get(self.reason, self.reason)


# --------------------------------------------------------------------------- geometry
def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics for a camera of about 53 degrees horizontal field of view (focal = width)."""
    f = float(width)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)


def head_yaw_deg(landmarks: np.ndarray, width: int, height: int) -> float | None:
    """Head yaw in degrees from one frame's landmarks: positive when the nose points to the image's right
    (the shopper turned to their own left), 0 facing the camera.  None when the pose cannot be solved."""
    import cv2

    pts = np.ascontiguousarray(landmarks[list(POSE_POINTS), :2], dtype=np.float64)
    ok, rvec, _tvec = cv2.solvePnP(CANONICAL_FACE, pts, camera_matrix(width, height), None,
                                   flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    forward = rot @ np.array([0.0, 0.0, -1.0])  # the face's front, in camera coordinates
    if forward[2] >= 0:  # facing away from the camera: not a solution for a face we can see
        return None
    return math.degrees(math.atan2(forward[0], -forward[2]))


def mesh_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The face box (x, y, w, h) the mesh spans: steadier from frame to frame than the detector's."""
    x0, y0 = landmarks[:, 0].min(), landmarks[:, 1].min()
    return float(x0), float(y0), float(landmarks[:, 0].max() - x0), float(landmarks[:, 1].max() - y0)


def eye_distance(landmarks: np.ndarray) -> float:
    right = landmarks[[R_EYE_OUTER, R_EYE_INNER], :2].mean(axis=0)
    left = landmarks[[L_EYE_INNER, L_EYE_OUTER], :2].mean(axis=0)
    return float(np.hypot(*(left - right)))


def planarity(start: np.ndarray, end: np.ndarray, sign: float = 1.0) -> float:
    """How far the nose moved off the plane of the rest of the face, in eye distances, toward the turn.

    A homography is fitted from the ``start`` to the ``end`` landmarks over every point but the
    nose's tip and ridge (458 points: eyes, brows, lips, cheeks, the face's outline), by RANSAC with
    inliers within :data:`RANSAC_EYE` eye distances (OpenCV's RANSAC is seeded the same at every
    call: the same landmarks give the same figure).  A flat picture, however it is turned, moves its
    nose with that homography: the residual of the nose points is landmark noise, near 0; the robust
    fit keeps the points the landmark model invented where it could not see (a face cut off by the
    picture's edge) from tilting the plane.  A head's nose stands in front of the face, so when the
    head turns its nose runs ahead of the plane, toward the side turned to (``sign`` +1 for the
    image's right, the shopper's own left).  Returned: the nose points' mean horizontal residual,
    signed by ``sign``, over the start's eye distance.
    """
    import cv2

    a = np.ascontiguousarray(start[:, :2], dtype=np.float64)
    b = np.ascontiguousarray(end[:, :2], dtype=np.float64)
    eye = max(eye_distance(start), 1e-6)
    h, _ = cv2.findHomography(a[_PLANE], b[_PLANE], cv2.RANSAC, RANSAC_EYE * eye)
    if h is None:
        return 0.0
    pred = cv2.perspectiveTransform(a[list(NOSE)].reshape(-1, 1, 2), h).reshape(-1, 2)
    residual = float(np.mean(b[list(NOSE), 0] - pred[:, 0]))
    return sign * residual / eye


RELIEF_DIRECTIONS = (0.0, 45.0, 90.0, 135.0)   # chords through the nose tip, degrees from the image's x axis
CHORD_BAND = 0.15          # a chord's points lie within this of its line, in eye distances...
CHORD_SPAN = (0.5, 1.5)    # ...and this far from the nose tip along it, on both sides
CHORD_MIN = 3              # points needed on each side of the nose for a chord
# The chords leave out the nose and the face's outline (FACE_OVAL).  On a head the outline is the
# silhouette: at the level of the nose it lies 1.2-1.6 eye distances behind the tip, where the cheek
# turns away from the camera much faster than any parabola through the cheeks, so the horizontal
# chord's parabola bent back to it and its value at the middle came up to the nose (on the unseen
# split's Grace Hopper from the rendered truth: 0.07 with the outline, 0.20 without); and a tracking
# window there sees the background beyond the face, so its points slid by up to 0.19 eye distances.
# On a sheet the outline is print like the rest: leaving it out takes nothing a print could use.
_CHORD_POINTS = np.setdiff1d(np.arange(468), NOSE + FACE_OVAL)
# The nose's most prominent point: the top of its tip (mesh point 4).  Not the mesh's point 1, at the
# tip's lower edge: its tracking window takes in the nostrils and the shadow under the nose, deeper than
# the tip, and it lagged 0.07-0.08 eye distances behind the rendered truth at a 22 degree turn on the
# unseen split's Grace Hopper (0.014-0.02 on the tuning photo), where 4 lagged 0.006-0.012 (0.004-0.011).
# Nor point 5 on the ridge above: the ridge is an edge with little texture along it, and with the tip's
# small window its backward track missed by 0.125 eye distances on a quick genuine turn.
TIP = (4,)


@dataclass(frozen=True)
class Chords:
    """The mesh points of each chord through the nose tip, their positions along it and their offsets across
    it (both in eye distances), from the start frame."""

    points: tuple[np.ndarray, ...]
    along: tuple[np.ndarray, ...]
    across: tuple[np.ndarray, ...] = ()


def chords(start: np.ndarray) -> Chords | None:
    """Mesh points on four lines through the nose tip (horizontal, vertical, both diagonals), on both sides
    of it, as the start frame shows them, leaving out the nose and the face's outline (see
    :data:`_CHORD_POINTS`); None when a side of a chord has too few points."""
    xy = np.asarray(start[:, :2], np.float64)
    eye = max(eye_distance(start), 1e-6)
    tip = xy[list(TIP)].mean(axis=0)
    pts, along, across = [], [], []
    others = _CHORD_POINTS[: np.searchsorted(_CHORD_POINTS, len(xy))]   # landmark sets of 468 points or fewer
    for deg in RELIEF_DIRECTIONS:
        d = np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])
        rel = (xy[others] - tip) / eye
        s = rel @ d
        off = rel @ np.array([-d[1], d[0]])
        near = (np.abs(off) <= CHORD_BAND) & (np.abs(s) >= CHORD_SPAN[0]) & (np.abs(s) <= CHORD_SPAN[1])
        if (near & (s > 0)).sum() < CHORD_MIN or (near & (s < 0)).sum() < CHORD_MIN:
            return None
        pts.append(others[near])
        along.append(s[near])
        across.append(off[near])
    return Chords(tuple(pts), tuple(along), tuple(across))


def _design(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The smooth surface along a chord: a parabola along it, and across it a slope and a crease (|offset|), so
    that a sheet folded or bent along the chord itself does not stand out of it at the chord's own line."""
    return np.c_[np.ones_like(s), s, s * s, q, np.abs(q)]


def _tip_offsets(lm: np.ndarray, ch: Chords) -> np.ndarray:
    """For each chord: the nose tip's horizontal offset from the smooth surface (see :func:`_design`) through
    the chord's points in this frame, in pixels."""
    x = np.asarray(lm[:, 0], np.float64)
    tip = x[list(TIP)].mean()
    across = ch.across or tuple(np.zeros_like(s) for s in ch.along)
    out = []
    for pts, s, q in zip(ch.points, ch.along, across):
        coef = np.linalg.lstsq(_design(s, q), x[pts], rcond=None)[0]
        out.append(tip - coef[0])
    return np.asarray(out)


def relief(start: np.ndarray, frame: np.ndarray, yaw_change_deg: float, ch: Chords | None = None,
           sign: float = 1.0) -> float:
    """How far the nose tip stands out of the surface around it, in eye distances, from the parallax of one turn.

    For each of four chords through the nose tip (:data:`TIP`: mesh points on a line through it, on both
    sides, off the nose and the face's outline, as :func:`chords` picks them in the start frame), a
    parabola along the chord is fitted to the horizontal positions of its points, in the start frame
    and in ``frame``; the nose tip's offset from
    it changes as the head turns by its depth in front of that smooth curve times the sine of the turn.
    A sheet of paper, flat, bent on a cylinder about any axis near one of the chords, or folded, is
    straight along its rulings: along the chord nearest them the nose lies on the sheet's own line and
    does not move off it.  A head's nose tip stands 2-3 cm in front of the midline above and below it
    and of the cheeks beside it, a peak in every direction.  Returned: the smallest over the four chords
    of (offset change toward the turn, signed by ``sign``) / (eye distance x sin(yaw change)).
    """
    ch = ch or chords(start)
    if ch is None or abs(yaw_change_deg) < 1.0:
        return 0.0
    eye = max(eye_distance(start), 1e-6)
    moved = sign * (_tip_offsets(frame, ch) - _tip_offsets(start, ch))
    return float(np.min(moved) / (eye * math.sin(math.radians(abs(yaw_change_deg)))))


LK = {"winSize": (21, 21), "maxLevel": 3,
      "criteria": (3, 20, 0.03)}   # cv2.TERM_CRITERIA_EPS | COUNT, 20 iterations, 0.03 px
# The nose tip is tracked with a smaller window.  At TRACK_EYE_PX a 21-pixel window is 0.26 eye distances
# (about 17 mm), as wide as the tip of a nose: half of it sees the cheeks and lip behind, which move less as
# the head turns, and Lucas-Kanade settles between the two motions.  Measured against the rendered truth
# (benchmarks/liveness_pad.py --tracking), the tracked tip then lagged 0.03-0.09 eye distances behind the
# real one at a 25 degree turn on every face, both ways, taking 0.07-0.2 off the relief of a real head and
# all of it on the unseen split's left turns.  An 11-pixel window (0.14 eye distances, about 9 mm) stays
# on the tip.  A print's tip lies on the sheet like its surroundings: no motion boundary, nothing to lag.
TIP_LK = {**LK, "winSize": (11, 11)}


def _gray(image: np.ndarray | None) -> np.ndarray | None:
    if image is None or image.ndim == 2:
        return image
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# --------------------------------------------------------------------------- the check
@dataclass
class _Frame:
    index: int
    t: float
    landmarks: np.ndarray
    yaw: float            # this frame's own estimate
    smooth: float         # median of this and the previous SMOOTH-1 frames' yaw
    gray: np.ndarray | None = None


TRACK_EYE_PX = 80.0   # the tracking picture is scaled so that the start's eye distance is this many pixels
TRACK_BLUR = 1.0      # and smoothed by a Gaussian of this sigma (pixels at that scale): JPEG blocks and sensor
                      # noise weigh less, so a re-saved or rescaled copy tracks like the original
TRACK_MARGIN = 0.6    # the tracked region: the start's mesh box and this share of its size on every side
# A point whose forward or backward track was lost is this far off, in tracking-picture pixels: far beyond any
# threshold, and finite, so that the percentile in _Tracks.follow interpolates (with infinity, inf - inf is NaN there, and
# a NaN lost to max() would let a frame with many lost tracks through).
LOST_TRACK_PX = 1e6


class _Tracks:
    """The start frame's chord and nose points, followed through the frames by pyramidal Lucas-Kanade optical
    flow (the image's own texture, not the landmark model's idea of where a nose goes).

    Every frame is tracked in the same picture geometry: the region about the start's face, scaled so that
    its eye distance is :data:`TRACK_EYE_PX` pixels, and smoothed.  The flow's window then covers the same
    part of the face at any camera resolution or distance, and a copy of a video, rescaled or re-compressed,
    gives the original's figures.
    """

    def __init__(self, start: _Frame, ch: Chords):
        import cv2

        self.start, self.chords = start, ch
        self.ids = np.unique(np.concatenate([*ch.points, np.asarray(TIP)]))
        self.tip = np.isin(self.ids, TIP)
        self.eye = max(eye_distance(start.landmarks), 1e-6)
        self.k = TRACK_EYE_PX / self.eye
        x, y, w, h = mesh_box(start.landmarks)
        self.origin = np.array([x - TRACK_MARGIN * w, y - TRACK_MARGIN * h], np.float64)
        self.size = (int(math.ceil(w * (1 + 2 * TRACK_MARGIN) * self.k)),
                     int(math.ceil(h * (1 + 2 * TRACK_MARGIN) * self.k)))
        self.warp = np.array([[self.k, 0, -self.k * self.origin[0]], [0, self.k, -self.k * self.origin[1]]])
        self._cv2 = cv2
        self.pos = self._to_track(start.landmarks[self.ids, :2]).reshape(-1, 1, 2)
        self.gray = self._picture(start.gray)

    def _to_track(self, xy: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(xy, np.float64) - self.origin) * self.k, dtype=np.float32)

    def _picture(self, gray: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        interp = cv2.INTER_AREA if self.k < 1 else cv2.INTER_LINEAR
        out = cv2.warpAffine(gray, self.warp, self.size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
        return cv2.GaussianBlur(out, (0, 0), TRACK_BLUR)

    def follow(self, frame: _Frame) -> float:
        """Move the points to ``frame``; the continuity error, in eye distances: the largest of the median
        distance between the tracked points and the mesh's, the 90th percentile of their distance back
        from a backward track (a cut or a blend between pictures leaves one or the other large), and the
        nose tip's own distance back (the relief rests on those few points: a tip that lost its track, as
        a small window can on a screen's pixel grid, is no evidence of depth)."""
        cv2 = self._cv2
        gray = self._picture(frame.gray)
        nxt, back = self.pos.copy(), self.pos.copy()
        found = np.ones(len(self.ids), bool)
        for sel, lk in ((~self.tip, LK), (self.tip, TIP_LK)):
            nxt[sel], st, _ = cv2.calcOpticalFlowPyrLK(self.gray, gray, self.pos[sel], None, **lk)
            back[sel], st_back, _ = cv2.calcOpticalFlowPyrLK(gray, self.gray, nxt[sel], None, **lk)
            found[sel] = (st.ravel() > 0) & (st_back.ravel() > 0)
        fb = np.linalg.norm((back - self.pos).reshape(-1, 2), axis=1)
        fb[~found] = LOST_TRACK_PX
        off = np.linalg.norm(nxt.reshape(-1, 2) - self._to_track(frame.landmarks[self.ids, :2]), axis=1)
        self.pos, self.gray = nxt, gray
        return float(max(np.median(off), np.percentile(fb, 90), fb[self.tip].max()) / TRACK_EYE_PX)

    def landmarks(self) -> np.ndarray:
        out = self.start.landmarks.copy()
        out[self.ids, :2] = self.pos.reshape(-1, 2) / self.k + self.origin
        return out


class _Break(enum.Enum):
    """How the face in a frame follows the last face seen."""
    NONE = "none"      # it carries on from it
    CUT = "cut"        # the box jumped, or the face was away for over MAX_GAP_S
    STALL = "stall"    # the terminal analysed no frame at all for over MAX_STALL_S


@dataclass
class LivenessCheck:
    """Feed frames with :meth:`add` until it returns a result; :meth:`finish` decides at the end of input."""

    challenge: str
    params: LivenessParams = field(default_factory=LivenessParams)
    # without pixels (landmark-only tests) the depth and continuity come from the mesh points themselves
    need_image: bool = True

    def __post_init__(self):
        if self.challenge not in CHALLENGES:
            raise ValueError(f"challenge must be left or right, not {self.challenge!r}")
        self.sign = 1.0 if self.challenge == "left" else -1.0
        self.frames = 0
        self.t_first: float | None = None
        self.result: LivenessResult | None = None
        self._restart()
        self.cuts = 0
        self.saw_face = False
        self.saw_frontal = False
        self.best_change = 0.0
        self.best_planarity = 0.0
        self.image_cuts = 0
        self.long_stalls = 0   # stretches over MAX_STALL_S in which no frame was analysed: the check started over
        self._fed_t: float | None = None   # the last frame given to add(), with or without a face
        self.continuity = 0.0  # the worst continuity error since the current start, eye distances
        self.progress = 0.0   # the turn so far from the current start, degrees toward the asked side

    def _restart(self) -> None:
        self._window: deque[float] = deque(maxlen=SMOOTH)
        self._recent: deque[_Frame] = deque(maxlen=SMOOTH)
        self._start: _Frame | None = None        # the frontal frame the turn is measured from
        self._initial: float | None = None
        self._peak: _Frame | None = None         # the frame of the largest turn since the threshold
        self._peak_window: list[np.ndarray] = []
        self._peak_change = 0.0
        self._passed_at: float | None = None
        self._last_t: float | None = None
        self._last_box = None
        self._absent_from: float | None = None   # the face was last known there at this time (no face since)
        self._last_smooth: float | None = None
        self._tracks: _Tracks | None = None
        self._path: list[tuple[float, float]] = []   # (change, relief) of each frame since the start

    @property
    def start_index(self) -> int | None:
        """Index of the frame the turn is measured from (its descriptor is the one matched)."""
        return self._start.index if self._start else None

    @property
    def peak_index(self) -> int | None:
        """Index of the frame of the largest turn so far past the threshold."""
        return self._peak.index if self._peak else None

    # -- feeding -----------------------------------------------------------------------
    def add(self, t: float, landmarks: np.ndarray | None, box: tuple | None,
            size: tuple[int, int], image: np.ndarray | None = None) -> LivenessResult | None:
        """One frame at time ``t`` (seconds): its landmarks and face box (x, y, w, h), or None when no single
        face was found; ``size`` = (width, height) of the frame; ``image`` the frame itself (RGB or gray),
        required unless the check was made with ``need_image=False``.  Returns the decision once there is one."""
        if self.result is not None:
            return self.result
        if image is None and self.need_image:
            raise ValueError("the liveness check needs the frame's pixels (image=...)")
        index = self.frames
        self.frames += 1
        fed, self._fed_t = self._fed_t, t
        if self.t_first is None and landmarks is not None:
            self.t_first = t
        if self.t_first is not None and t - self.t_first > self.params.timeout_s:
            return self._decide_at_end()
        if landmarks is None or box is None:
            if self._last_t is not None and self._absent_from is None:
                # seen without a face: since the face frame before (or, when the terminal analysed nothing
                # for a while, since now: it cannot say when the face went)
                self._absent_from = self._last_t if fed is not None and t - fed <= MAX_GAP_S else t
            if self._absent_from is not None and t - self._absent_from > MAX_GAP_S:
                self.cuts += 1
                self._restart()
            return None
        self.saw_face = True
        broke = self._break(t, box)
        if broke is not _Break.NONE:
            if broke is _Break.STALL:
                self.long_stalls += 1
            else:
                self.cuts += 1
            self._restart()
        self._last_t, self._last_box, self._absent_from = t, box, None
        yaw = head_yaw_deg(landmarks, *size)
        if yaw is None:
            return None
        self._window.append(yaw)
        frame = _Frame(index, t, np.asarray(landmarks, dtype=np.float32), yaw, float(np.median(self._window)),
                       _gray(image))
        self._recent.append(frame)
        if len(self._window) < SMOOTH:
            return None
        centre = self._recent[len(self._recent) // 2]   # the frame the median window is centred on
        smooth = frame.smooth
        if not self._continuous(frame, t):
            return None
        if abs(smooth) <= FRONTAL_MAX_DEG:
            self.saw_frontal = True
            # the start: the frontal frame furthest to the side opposite the challenge
            if self._start is None or self.sign * smooth < self.sign * self._start.smooth:
                self._start = _Frame(centre.index, centre.t, centre.landmarks, centre.yaw, smooth, centre.gray)
                self._begin_tracks()
            if self._initial is None:
                self._initial = smooth   # the first frontal pose: a turn away from it to the other side fails
        if self._start is None:
            return None
        if self.sign * (smooth - self._initial) <= -WRONG_WAY * self.params.min_yaw_deg:
            return self._decide(False, "wrong_direction", self.sign * (smooth - self._initial), 0.0, None)
        change = self.sign * (smooth - self._start.smooth)
        self.progress = change
        self._path.append((change, self._relief_now(frame, smooth)))
        if self.sign * smooth < END_SIDE * self.params.min_yaw_deg:
            change = min(change, self.params.min_yaw_deg - 1e-6)  # not yet on the asked side of frontal
        self.best_change = max(self.best_change, change)
        if change >= self.params.min_yaw_deg:
            if self._passed_at is None:
                self._passed_at = t
            if change > self._peak_change:
                self._peak_change, self._peak = change, centre
                self._peak_window = [f.landmarks for f in self._recent]   # the peak and its neighbours
            settled = (self._peak_change - change >= SETTLE_DEG) or (t - self._passed_at >= SETTLE_S)
            if settled:
                return self._judge_turn()
        elif self._peak is not None:
            return self._judge_turn()  # the head came back under the threshold: judge the peak seen
        return None

    def _break(self, t: float, box) -> _Break:
        """Whether the face broke off since the last face.  A stretch of up to MAX_STALL_S without analysed
        frames is no absence of the face: it is the terminal falling behind (a slow frame), and the box and
        image continuity still judge it."""
        if self._last_box is None:
            return _Break.NONE
        if self._absent_from is not None:
            if t - self._absent_from > MAX_GAP_S:
                return _Break.CUT
        elif t - self._last_t > MAX_STALL_S:
            return _Break.STALL
        x0, y0, w0, h0 = self._last_box
        x1, y1, w1, h1 = box
        move = math.hypot((x1 + w1 / 2) - (x0 + w0 / 2), (y1 + h1 / 2) - (y0 + h0 / 2))
        scale = max(w1, 1) / max(w0, 1)
        jumped = move > MAX_JUMP * max(w0, 1) or not (1 / MAX_SCALE <= scale <= MAX_SCALE)
        return _Break.CUT if jumped else _Break.NONE

    # -- deciding ---------------------------------------------------------------------
    def _judge_turn(self) -> LivenessResult:
        # the median over the peak frame and its two neighbours: one frame's landmarks are noisy
        p = float(np.median([planarity(self._start.landmarks, lm, self.sign) for lm in self._peak_window]))
        self.best_planarity = max(self.best_planarity, p)
        peak = self._peak_change
        # depth: the median over every frame from half the asked turn to the peak
        reliefs = [r for c, r in self._path if c >= self.params.min_yaw_deg / 2]
        rel = float(np.median(reliefs)) if len(reliefs) >= 3 else 0.0
        # the turn went through intermediate poses (a cut between two pictures has none)
        between = sum(1 for c, _ in self._path if 0.1 * peak < c < 0.9 * peak)
        if between < self.params.min_turn_frames:
            return self._decide(False, "cut", peak, p, self._peak, rel)
        if rel >= self.params.relief_min:
            return self._decide(True, "live", peak, p, self._peak, rel)
        return self._decide(False, "flat", peak, p, self._peak, rel)

    def _decide(self, live: bool, reason: str, change: float, plan: float, end: _Frame | None,
                rel: float = 0.0) -> LivenessResult:
        self.result = LivenessResult(live, self.challenge, reason, float(change), float(plan), self.frames,
                                     self._start.index if self._start else None, end.index if end else None,
                                     float(rel))
        return self.result

    # -- depth and continuity ------------------------------------------------------------
    def _begin_tracks(self) -> None:
        ch = chords(self._start.landmarks)
        self._path = []
        self.continuity = 0.0
        self._tracks = None
        if ch is None or self._start.gray is None:
            return
        self._tracks = _Tracks(self._start, ch)
        for f in self._recent:       # the frames after the start already seen (the median's lag)
            if f.index > self._start.index:
                self.continuity = max(self.continuity, self._tracks.follow(f))

    def _relief_now(self, frame: _Frame, smooth: float) -> float:
        change = smooth - self._start.smooth
        if self._tracks is not None:
            return relief(self._start.landmarks, self._tracks.landmarks(), change, self._tracks.chords, self.sign)
        if self.need_image:
            return 0.0     # no chords on this face: no evidence of depth
        return relief(self._start.landmarks, frame.landmarks, change, sign=self.sign)

    def _continuous(self, frame: _Frame, t: float) -> bool:
        """Image continuity and yaw speed since the last frame; a break starts the check over (False)."""
        smooth, last = frame.smooth, self._last_smooth
        self._last_smooth = smooth
        broken = False
        if last is not None and len(self._recent) > 1:
            dt = max(t - self._recent[-2].t, 1e-3)
            broken = abs(smooth - last) / dt > self.params.max_yaw_rate_dps
        if self._tracks is not None and frame.index > self._start.index:
            err = self._tracks.follow(frame)
            self.continuity = max(self.continuity, err)
            broken = broken or err > self.params.flow_max
        if broken:
            self.image_cuts += 1
            self.cuts += 1
            self._restart()
            self._last_smooth = smooth
        return not broken

    def _decide_at_end(self) -> LivenessResult:
        if self._peak is not None:
            return self._judge_turn()
        if not self.saw_face:
            reason = "no_face"
        elif not self.saw_frontal:
            reason = "not_frontal"
        elif self.image_cuts and self._start is None:
            reason = "cut"
        elif self.cuts and self._start is None:
            reason = "face_lost"
        elif self.long_stalls and self._start is None:
            reason = "too_slow"
        else:
            reason = "timeout"
        return self._decide(False, reason, self.best_change, 0.0, None)

    def finish(self) -> LivenessResult:
        """The decision when the input ends (a video file, a closed camera)."""
        if self.result is not None:
            return self.result
        return self._decide_at_end()

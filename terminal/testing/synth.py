"""Generated presentations for the liveness check: genuine head turns and presentation attacks.

No face video ships with the project, so the check is tested and measured on material made from
still photos at test time, in memory (nothing is written unless a caller saves it):

- **genuine**: the photo is texture-mapped onto its own 468-point face mesh (the landmarks carry a
  relative depth), the mesh is turned in yaw about a vertical axis behind the face, step by step,
  and each frame is rendered by a piecewise-affine warp of the mesh triangles (nearest triangles
  drawn last), with a ring of points around the face that turns with the head and a fixed image
  border, so hair and background follow smoothly; sensor noise on top;
- **print_still**: the photo itself, held still for 3 s, with sensor noise and a slight tremor;
- **print_turned**: the photo as a flat print inside a room, the print's plane turned about a
  vertical axis (0 to 35 degrees, either way), with slight translation, blur and noise;
- **screen**: the turned print shown on a phone: a bright bezel, a pixel grid and moire;
- **replay**: a genuine sequence presented for the opposite challenge;
- **bent prints** (:func:`bent_print`): the frontal picture printed, cropped about the face, laid on a
  convex or concave cylinder, folded along the midline (ridge or valley), wobbling, bent while it is
  turned, pitched, brought closer, rendered through a pinhole camera by the same mesh warp;
- **photo switches** (:func:`photo_switch`): a frontal picture, then a cut or a cross-fade to the same
  head turned 15-25 degrees, both rendered from the mesh;
- **copies** (:func:`reencoded`): a genuine turn re-saved as JPEG and rescaled (still genuine).

Yaw sign as in :mod:`terminal.face.liveness`: positive turns the nose toward the image's right edge,
the subject's own left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..face.liveness import FACE_OVAL, NOSE_TIP, eye_distance

FPS = 30.0


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of the cross product of 2-D vectors (twice the signed triangle area); numpy 2.5 refuses 2-D np.cross."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


@dataclass(frozen=True)
class Sequence:
    kind: str                  # genuine, print_still, print_turned, screen, replay
    turn: str | None           # the side the head or the print turns to ("left"/"right"), None when still
    frames: list[np.ndarray]
    fps: float
    label: str


def kiosk_view(rgb: np.ndarray, box, size=(640, 480)) -> np.ndarray:
    """The photo cropped and scaled to what the kiosk camera sees: a 640x480 frame with the face about a
    third of its width (edges padded by replication when the photo is too tight)."""
    import cv2

    x, y, bw, bh = box
    cx, cy = x + bw / 2, y + bh * 0.55
    w = 3.0 * bw
    h = w * size[1] / size[0]
    src = np.float32([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx - w / 2, cy + h / 2]])
    dst = np.float32([[0, 0], [size[0], 0], [0, size[1]]])
    return cv2.warpAffine(rgb, cv2.getAffineTransform(src, dst), size, flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def yaw_profile(peak_deg: float, seconds: float, fps: float = FPS, hold_s: float = 0.6, back: bool = True,
                uneven: bool = False, slow_start: bool = False) -> list[float]:
    """Yaw per frame: frontal for ``hold_s``, a turn to ``peak_deg`` over ``seconds``, a short hold, back."""
    n = max(2, int(round(seconds * fps)))
    k = np.arange(n + 1) / n
    if uneven:  # a quick start, a hesitation, then the rest: real turns are not smooth
        k = np.interp(k, [0, 0.3, 0.55, 1.0], [0, 0.65, 0.72, 1.0])
    if slow_start:  # small at first (a shopper unsure what is asked), then the rest quickly
        k = np.interp(k, [0, 0.5, 0.6, 1.0], [0, 0.12, 0.3, 1.0])
    ramp = list(peak_deg * (1 - np.cos(np.pi * k)) / 2)
    seq = [0.0] * int(hold_s * fps) + ramp + [peak_deg] * int(0.3 * fps)
    return seq + (ramp[::-1] + [0.0] * int(0.5 * fps) if back else [])


def _noise(rng, img: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- genuine: the mesh turned
def _triangles(points: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    sub = cv2.Subdiv2D((-w, -h, 3 * w, 3 * h))
    index = {}
    for i, (x, y) in enumerate(points):
        key = (round(float(x), 3), round(float(y), 3))
        if key in index:
            continue
        index[key] = i
        sub.insert((float(x), float(y)))
    tris = []
    for t in sub.getTriangleList():
        ids = [index.get((round(float(t[j]), 3), round(float(t[j + 1]), 3))) for j in (0, 2, 4)]
        if None not in ids:
            tris.append(ids)
    return np.asarray(tris, dtype=np.int32)


class HeadModel:
    """One photo on its own face mesh, ready to be rendered at any yaw."""

    def __init__(self, rgb: np.ndarray, landmarks: np.ndarray):
        h, w = rgb.shape[:2]
        self.rgb = rgb
        lm = np.asarray(landmarks, dtype=np.float64)
        self.iod = eye_distance(lm)
        centre = lm[list(FACE_OVAL), :2].mean(axis=0)
        z_front = lm[NOSE_TIP, 2]
        # the turning axis: vertical, through the face's centre, 1.6 eye distances behind the nose tip
        self.pivot = np.array([centre[0], 0.0, z_front + 1.6 * self.iod])
        # a ring around the face (hair, ears, neck) turning with the head at the depth of the face's edge
        oval = lm[list(FACE_OVAL)]
        ring = []
        for scale, dz in ((1.25, 0.15), (1.6, 0.35)):
            r = oval.copy()
            r[:, :2] = centre + (oval[:, :2] - centre) * scale
            r[:, 2] = oval[:, 2] + dz * self.iod
            ring.append(r)
        border = [(x, y, 0.0) for x in np.linspace(0, w - 1, 7) for y in (0, h - 1)] + \
                 [(x, y, 0.0) for x in (0, w - 1) for y in np.linspace(0, h - 1, 6)[1:-1]]
        self.points = np.vstack([lm, *ring, np.asarray(border)])
        self.moving = np.zeros(len(self.points), bool)
        self.moving[:len(lm) + 2 * len(oval)] = True
        self.tris = _triangles(self.points[:, :2], w, h)
        # the camera distance for perspective, in pixels: a face about 50 cm away (eye distance ~63 mm)
        self.distance = self.iod * 8.0
        from ..face.liveness import head_yaw_deg

        self.own_yaw = head_yaw_deg(lm, w, h) or 0.0   # the photo's own pose: renders start from frontal

    def frontal(self) -> np.ndarray:
        """The photo turned to face the camera (what a print of a good photo shows)."""
        return self.render(0.0)

    def project(self, yaw_deg: float, shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """2D positions of every model point and their depth after turning the head by ``yaw_deg``.

        The photo's points are lifted to 3D through a pinhole camera (focal = distance, centre at the
        image's centre), turned about the vertical axis, and projected back; yaw 0 gives the photo back.
        """
        a = math.radians(yaw_deg)
        c, s = math.cos(a), math.sin(a)
        h, w = self.rgb.shape[:2]
        d = self.distance
        m = self.moving
        p = self.points
        z = d + p[:, 2] - p[m, 2].min()
        x3, y3 = (p[:, 0] - w / 2) * z / d, (p[:, 1] - h / 2) * z / d
        zp = d + self.pivot[2] - p[m, 2].min()
        xp = (self.pivot[0] - w / 2) * zp / d
        dx, dz = x3[m] - xp, z[m] - zp
        x3, z2 = x3.copy(), z.copy()
        x3[m] = xp + c * dx - s * dz
        z2[m] = zp + s * dx + c * dz
        uv = p[:, :2].copy()
        uv[m, 0] = w / 2 + x3[m] * d / z2[m] + shift[0]
        uv[m, 1] = h / 2 + y3[m] * d / z2[m] + shift[1]
        return uv, z2

    def render(self, yaw_deg: float, shift=(0.0, 0.0)) -> np.ndarray:
        """The head at ``yaw_deg`` from frontal (each output pixel looks up its triangle's affine map)."""
        dst, depth = self.project(yaw_deg - self.own_yaw, shift)
        return warp_mesh(self.rgb, self.points[:, :2], dst, depth, self.tris, self.rgb, self.moving)


def warp_mesh(src_img: np.ndarray, src: np.ndarray, dst: np.ndarray, depth: np.ndarray, tris: np.ndarray,
              base: np.ndarray, moving: np.ndarray | None = None) -> np.ndarray:
    """``src_img`` drawn over a copy of ``base`` by a piecewise-affine warp: triangle ``tris[k]`` of the
    ``src`` points goes to the same triangle of the ``dst`` points; nearer triangles (smaller ``depth``)
    are drawn over farther ones, triangles turned away from the camera are not drawn, and pixels no
    triangle covers keep ``base`` (where ``base`` is ``src_img`` itself, they stay where they are)."""
    import cv2

    h, w = base.shape[:2]
    # only the part of the picture that changes: the bounding box of the moving points, before and after
    sel = moving if moving is not None else np.ones(len(src), bool)
    span = np.vstack([dst[sel], src[sel]]) if base is src_img else dst[sel]
    x0, y0 = np.clip(np.floor(span.min(axis=0)).astype(int) - 2, 0, [w, h])
    x1, y1 = np.clip(np.ceil(span.max(axis=0)).astype(int) + 3, 0, [w, h])
    out = base.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
    d, sr = dst[tris], src[tris]            # (n, 3, 2) corners, output and source
    area = _cross2(d[:, 1] - d[:, 0], d[:, 2] - d[:, 0])
    s_area = _cross2(sr[:, 1] - sr[:, 0], sr[:, 2] - sr[:, 0])
    visible = (area * s_area > 0) & (np.abs(area) > 1e-3)   # not turned away from the camera nor edge-on
    # the affine map of each triangle, output pixel -> source pixel: S @ inverse(D)
    dm = np.concatenate([d.transpose(0, 2, 1), np.ones((len(d), 1, 3))], axis=1)
    dm[~visible] = np.eye(3)
    maps = np.zeros((len(tris) + 1, 2, 3), np.float32)
    maps[:-1] = sr.transpose(0, 2, 1) @ np.linalg.inv(dm)
    maps[-1] = [[1, 0, 0], [0, 1, 0]]      # pixels no triangle covers: the identity (base shows through)
    order = np.argsort(-depth[tris].mean(axis=1))  # far triangles first, near ones over them
    corners = np.round(d - [x0, y0]).astype(np.int32)
    for k in order[visible[order]]:
        cv2.fillConvexPoly(ids, corners[k], int(k))
    covered = ids >= 0
    ids[~covered] = len(tris)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a = maps[ids]
    map_x = a[..., 0, 0] * xx + a[..., 0, 1] * yy + a[..., 0, 2]
    map_y = a[..., 1, 0] * xx + a[..., 1, 1] * yy + a[..., 1, 2]
    drawn = cv2.remap(src_img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if base is src_img:
        out[y0:y1, x0:x1] = drawn
    else:
        out[y0:y1, x0:x1] = np.where(covered[..., None], drawn, out[y0:y1, x0:x1])
    return out


def genuine(model: HeadModel, turn: str, peak_deg: float = 25.0, seconds: float = 1.0, *, uneven: bool = False,
            fps: float = FPS, seed: int = 0, noise: float = 3.0, back: bool = True, slow_start: bool = False,
            label: str = "") -> Sequence:
    rng = np.random.default_rng(seed)
    sign = 1.0 if turn == "left" else -1.0
    frames = []
    for i, yaw in enumerate(yaw_profile(sign * peak_deg, seconds, fps, uneven=uneven, back=back,
                                        slow_start=slow_start)):
        sway = (1.5 * math.sin(i / fps * 2.1), 1.0 * math.sin(i / fps * 1.3))  # the body moves a little too
        frames.append(_noise(rng, model.render(yaw, sway), noise))
    return Sequence("genuine", turn, frames, fps, label or f"genuine {turn} {peak_deg:g}deg {seconds:g}s")


# --------------------------------------------------------------------------- attacks
def _room(rng, h: int, w: int) -> np.ndarray:
    """A plain room behind the print: a soft gradient with some texture."""
    import cv2

    y, x = np.mgrid[0:h, 0:w]
    base = 90 + 60 * (x / w) + 20 * (y / h)
    tex = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 6)
    room = np.stack([base * 0.9 + tex, base + tex, base * 1.05 + tex], axis=-1)
    return np.clip(room, 0, 255).astype(np.uint8)


def print_still(rgb: np.ndarray, seconds: float = 3.0, *, fps: float = FPS, seed: int = 0,
                label: str = "") -> Sequence:
    import cv2

    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    frames = []
    for i in range(int(seconds * fps)):
        m = np.float32([[1, 0, 0.8 * math.sin(i * 0.7)], [0, 1, 0.6 * math.cos(i * 0.5)]])  # a hand's tremor
        frames.append(_noise(rng, cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE), 4.0))
    return Sequence("print_still", None, frames, fps, label or "print held still")


def _plane_homography(w: int, h: int, yaw_deg: float, scale: float, shift, distance: float) -> np.ndarray:
    """The homography of a w x h picture on a plane turned by ``yaw_deg`` about its vertical centre line."""
    import cv2

    a = math.radians(yaw_deg)
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    out = []
    for x, y in corners:
        px, py = (x - w / 2) * scale, (y - h / 2) * scale
        # a positive turn takes the picture's right edge away from the camera, as a head turning to its
        # own left takes the image-right half of the face away
        rx, rz = px * math.cos(a), px * math.sin(a)
        f = distance / (distance + rz)
        out.append([w / 2 + rx * f + shift[0], h / 2 + py * f + shift[1]])
    return cv2.getPerspectiveTransform(corners, np.float32(out))


def _screen_look(rgb: np.ndarray, rng) -> np.ndarray:
    """A photo shown on a phone: brighter, a visible pixel grid, moire bands, and a bright bezel around it."""
    h, w = rgb.shape[:2]
    img = rgb.astype(np.float32) * 1.08 + 18
    y, x = np.mgrid[0:h, 0:w]
    grid = 0.86 + 0.14 * ((x % 3 != 0) & (y % 3 != 0))
    angle = rng.uniform(0.2, 1.2)
    moire = 1 + 0.07 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / rng.uniform(9, 17))
    img = img * (grid * moire)[..., None]
    b = max(6, w // 25)
    framed = np.full((h + 2 * b, w + 2 * b, 3), 235, np.float32)   # a white phone's bezel
    framed[b:b + h, b:b + w] = img
    return np.clip(framed, 0, 255).astype(np.uint8)


def print_turned(rgb: np.ndarray, turn: str, peak_deg: float = 30.0, seconds: float = 1.0, *, screen: bool = False,
                 fps: float = FPS, seed: int = 0, label: str = "") -> Sequence:
    import cv2

    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    picture = _screen_look(rgb, rng) if screen else rgb
    ph, pw = picture.shape[:2]
    room = _room(rng, h, w)
    sign = 1.0 if turn == "left" else -1.0
    scale = 0.85 * min(w / pw, h / ph)
    drift = rng.uniform(-1.0, 1.0, 2)
    frames = []
    for i, yaw in enumerate(yaw_profile(sign * peak_deg, seconds, fps, uneven=bool(seed % 2))):
        shift = (drift[0] * i * 0.6 + 2 * math.sin(i * 0.3), drift[1] * i * 0.4)
        hm = _plane_homography(pw, ph, yaw, scale, shift, distance=2.2 * w)
        # the picture's pixels into the frame, over the room
        warped = cv2.warpPerspective(picture, hm, (w, h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), hm, (w, h), flags=cv2.INTER_NEAREST)
        frame = np.where(mask[..., None] > 0, warped, room)
        frame = cv2.GaussianBlur(frame, (0, 0), 0.6 + 0.5 * rng.random())
        if screen:  # the screen's glare: a soft bright patch
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.4) * h
            yy, xx = np.mgrid[0:h, 0:w]
            glare = 40 * np.exp(-(((xx - cx) / (0.25 * w)) ** 2 + ((yy - cy) / (0.2 * h)) ** 2))
            frame = np.clip(frame + glare[..., None] * (mask[..., None] > 0), 0, 255).astype(np.uint8)
        frames.append(_noise(rng, frame, 3.0))
    kind = "screen" if screen else "print_turned"
    return Sequence(kind, turn, frames, fps, label or f"{kind} {turn} {peak_deg:g}deg {seconds:g}s")


# --------------------------------------------------------------------------- bent prints and photo switches
@dataclass(frozen=True)
class Bend:
    """How a print is bent: ``shape`` "flat", "cylinder" (about a vertical axis; ``radius`` in face widths,
    ``convex`` with the face's middle toward the camera, else concave) or "fold" (along the vertical
    midline by ``fold_deg`` on each side; ``convex`` = the ridge toward the camera, else a valley).
    ``wobble``: the bend changes by up to this share from frame to frame (a hand flexing the paper);
    ``grow``: the bend grows from flat with the turn (the print bent while turning); ``pitch_deg``: the
    print tipped about a horizontal axis as well; ``approach``: it comes this share closer over the turn."""

    shape: str = "cylinder"
    radius: float = 1.0
    fold_deg: float = 25.0
    convex: bool = True
    wobble: float = 0.0
    grow: bool = False
    pitch_deg: float = 0.0
    approach: float = 0.0

    def surface(self, u: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) of the paper's horizontal coordinate ``u`` (face widths from the face's centre column)."""
        c = 1.0 if self.convex else -1.0
        if self.shape == "cylinder" and strength > 1e-6:
            r = self.radius / strength
            return r * np.sin(u / r), c * r * (1 - np.cos(u / r))
        if self.shape == "fold":
            a = math.radians(self.fold_deg * strength)
            return u * math.cos(a), c * np.abs(u) * math.sin(a)
        return u, np.zeros_like(u)


def bent_print(model: HeadModel, turn: str, bend: Bend, peak_deg: float = 30.0, seconds: float = 1.0, *,
               fps: float = FPS, seed: int = 0, label: str = "") -> Sequence:
    """The frontal photo printed (cropped about the face: two face widths by two and a half), bent as
    ``bend`` says, held in a room and turned to ``turn`` by ``peak_deg`` about a vertical axis a little
    behind the paper, through a pinhole camera about three face widths away; tremor, blur and noise."""
    import cv2

    rng = np.random.default_rng(seed)
    front = model.frontal()
    h, w = front.shape[:2]
    lm = model.points[:468]
    cx, cy = lm[list(FACE_OVAL), :2].mean(axis=0)
    fw = float(np.ptp(lm[:, 0]))                           # the face's width in pixels
    gx, gy = np.meshgrid(np.linspace(-1.0, 1.0, 33), np.linspace(-1.1, 1.4, 26))
    src = np.c_[cx + gx.ravel() * fw, cy + gy.ravel() * fw]
    cols = gx.shape[1]
    tris = []
    for r in range(gx.shape[0] - 1):
        for q in range(cols - 1):
            a, b, c, d = r * cols + q, r * cols + q + 1, (r + 1) * cols + q, (r + 1) * cols + q + 1
            tris += [(a, b, d), (a, d, c)]
    tris = np.asarray(tris, np.int32)
    room = _room(rng, h, w)
    distance = 3.0 * fw
    pivot = rng.uniform(0.0, 0.4) * fw
    sign = 1.0 if turn == "left" else -1.0
    profile = yaw_profile(sign * peak_deg, seconds, fps, back=False, uneven=bool(seed % 2))
    phase = rng.uniform(0, 2 * math.pi, 2)
    frames = []
    for i, yaw in enumerate(profile):
        k = abs(yaw) / peak_deg if peak_deg else 1.0          # how far into the turn
        strength = k if bend.grow else 1.0
        if bend.wobble:
            strength *= 1 + bend.wobble * math.sin(i * 0.9 + phase[0])
        X, Z = bend.surface(gx.ravel(), max(strength, 0.0))
        X, Y, Z = X * fw, gy.ravel() * fw, Z * fw
        p = math.radians(bend.pitch_deg * (0.5 + 0.5 * k) + 2.0 * math.sin(i * 0.4 + phase[1]))
        Y, Z = Y * math.cos(p) - Z * math.sin(p), Y * math.sin(p) + Z * math.cos(p)
        a = math.radians(yaw)
        dz = Z + pivot
        X, Z = X * math.cos(a) - dz * math.sin(a), X * math.sin(a) + dz * math.cos(a) - pivot
        d = distance * (1 - bend.approach * k)
        f = distance / (d + Z)
        shift = (2.0 * math.sin(i * 0.5) + rng.normal(0, 0.4), 1.5 * math.cos(i * 0.3) + rng.normal(0, 0.4))
        dst = np.c_[cx + X * f + shift[0], cy + Y * f + shift[1]]
        frame = warp_mesh(front, src, dst, Z, tris, room)
        frame = cv2.GaussianBlur(frame, (0, 0), 0.6 + 0.5 * rng.random())
        frames.append(_noise(rng, frame, 3.0))
    return Sequence("bent_print", turn, frames, fps, label or f"bent print {bend} {turn} {peak_deg:g}deg")


def photo_switch(model: HeadModel, turn: str, second_deg: float = 20.0, fade: int = 0, *, fps: float = FPS,
                 seed: int = 0, label: str = "") -> Sequence:
    """Two pictures of the same person: the head facing the camera, then (a cut, or a cross-fade over
    ``fade`` frames) the same head turned ``second_deg`` to ``turn``, rendered from the mesh; held in a
    trembling hand, with noise."""
    import cv2

    rng = np.random.default_rng(seed)
    sign = 1.0 if turn == "left" else -1.0
    a, b = model.render(0.0).astype(np.float32), model.render(sign * second_deg).astype(np.float32)
    h, w = a.shape[:2]
    n_a, n_b = int(0.8 * fps), int(1.2 * fps)
    mix = [0.0] * n_a + [(j + 1) / (fade + 1) for j in range(fade)] + [1.0] * n_b
    frames = []
    for i, m in enumerate(mix):
        img = (1 - m) * a + m * b
        t = np.float32([[1, 0, 1.2 * math.sin(i * 0.7) + rng.normal(0, 0.3)],
                        [0, 1, 0.9 * math.cos(i * 0.5) + rng.normal(0, 0.3)]])
        img = cv2.warpAffine(img, t, (w, h), borderMode=cv2.BORDER_REPLICATE)
        frames.append(_noise(rng, np.clip(img, 0, 255).astype(np.uint8), 3.0))
    kind = "switch_fade" if fade else "switch_cut"
    return Sequence(kind, turn, frames, fps, label or f"{kind} {turn} {second_deg:g}deg")


def reencoded(seq: Sequence, quality: int = 70, scale: float = 1.0) -> Sequence:
    """The same presentation re-saved as JPEG at ``quality`` (and rescaled by ``scale`` first): a copy of a
    video must get the same answer as the original."""
    import cv2

    out = []
    for f in seq.frames:
        if scale != 1.0:
            f = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        ok, data = cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]))
    return Sequence(seq.kind, seq.turn, out, seq.fps, f"{seq.label}, JPEG q{quality} x{scale:g}")


# --------------------------------------------------------------------------- a photo's whole set of trials
# genuine turns: (peak degrees, seconds, uneven, small at first)
GENUINE_TURNS = ((25.0, 0.5, True, False), (20.0, 1.0, False, False), (30.0, 2.0, False, False),
                 (18.0, 1.5, True, False), (22.0, 1.2, False, True))
# the same turns re-saved as JPEG (quality, scale): a copy must get the original's answer
COPIES = ((60, 0.75), (70, 1.25))
PRINT_PEAKS = (15.0, 25.0, 35.0)
# bent prints, each turned 30 degrees toward the asked side (the attacker's best try)
BENDS = {
    "print_convex": [Bend("cylinder", radius=r) for r in (0.6, 1.0, 2.0)],
    "print_concave": [Bend("cylinder", radius=r, convex=False) for r in (0.6, 1.0, 2.0)],
    "print_fold_ridge": [Bend("fold", fold_deg=a) for a in (10.0, 25.0, 40.0)],
    "print_fold_valley": [Bend("fold", fold_deg=a, convex=False) for a in (10.0, 25.0, 40.0)],
    "print_wobble": [Bend("cylinder", radius=r, wobble=0.5) for r in (0.8, 1.5)],
    "print_bending": [Bend("cylinder", radius=r, grow=True) for r in (0.6, 1.0)] + [Bend("fold", fold_deg=35.0, grow=True)],
    "print_pitched": [Bend("flat", pitch_deg=20.0, approach=0.15), Bend("cylinder", radius=1.0, pitch_deg=-20.0),
                      Bend("fold", fold_deg=25.0, pitch_deg=25.0, approach=0.1)],
}
SWITCH_DEGS = (15.0, 20.0, 25.0)
ATTACK_KINDS = ("print_still", "print_turned", "screen", "replay", *BENDS, "switch_cut", "switch_fade")


@dataclass(frozen=True)
class Trial:
    kind: str          # "genuine" or one of ATTACK_KINDS
    challenge: str     # the side asked for
    make: object       # () -> Sequence, rendered when the trial runs
    label: str


def other(side: str) -> str:
    return "right" if side == "left" else "left"


def prepare(rgb: np.ndarray, pipeline):
    """A photo as the kiosk camera would see it, with its head model; None when it shows no usable face."""
    analysis = pipeline.analyse(rgb, embed=False)
    if analysis.gate.face is None:
        return None
    view = kiosk_view(rgb, analysis.gate.face.box)
    analysis = pipeline.analyse(view, embed=False)
    landmarks = pipeline.landmarks(view, analysis)
    if landmarks is None:
        return None
    return HeadModel(view, landmarks)


def trials(model: HeadModel, *, fps: float = 15.0, seed: int = 0) -> list[Trial]:
    """Every presentation made from one photo: genuine turns (both ways, five speeds, two re-saved copies)
    presented for their own side, the same sequences replayed for the other side, a still print, turned
    prints and screens (both ways, 15 to 35 degrees) each presented for both sides, bent, folded,
    wobbling, pitched prints and photo switches (cut, 4-frame cross-fade) turned toward the asked side."""
    out = []
    for n, side in enumerate(("left", "right")):
        for m, (peak, seconds, uneven, slow) in enumerate(GENUINE_TURNS):
            s = seed * 100 + n * 10 + m

            def make(side=side, peak=peak, seconds=seconds, uneven=uneven, slow=slow, s=s):
                return genuine(model, side, peak, seconds, uneven=uneven, slow_start=slow, fps=fps, seed=s,
                               back=False)

            label = f"{side} {peak:g}deg in {seconds:g}s{' uneven' if uneven else ''}{' small at first' if slow else ''}"
            out.append(Trial("genuine", side, make, "genuine " + label))
            out.append(Trial("replay", other(side), make, f"replay of {label}, asked {other(side)}"))
        for m, (quality, scale) in enumerate(COPIES):
            peak, seconds, uneven, slow = GENUINE_TURNS[(m + n) % len(GENUINE_TURNS)]

            def make(side=side, peak=peak, seconds=seconds, uneven=uneven, quality=quality, scale=scale,
                     s=seed * 100 + n * 10 + 7 + m):
                return reencoded(genuine(model, side, peak, seconds, uneven=uneven, fps=fps, seed=s, back=False),
                                 quality, scale)

            out.append(Trial("genuine", side, make, f"genuine {side} {peak:g}deg in {seconds:g}s, "
                                                    f"JPEG q{quality} x{scale:g}"))
    front = model.frontal()

    def make_still():   # one sequence for both sides: the same print, asked left and asked right
        return print_still(front, fps=fps, seed=seed)

    for n, side in enumerate(("left", "right")):
        out.append(Trial("print_still", side, make_still, f"print held still, asked {side}"))
        for k, peak in enumerate(PRINT_PEAKS):
            for kind in ("print_turned", "screen"):
                def make(side=side, peak=peak, kind=kind, s=seed * 100 + k):
                    return print_turned(front, side, peak, 1.0, screen=kind == "screen", fps=fps, seed=s)

                for asked in ("left", "right"):
                    out.append(Trial(kind, asked, make, f"{kind} turned {side} {peak:g}deg, asked {asked}"))
        for kind, bends in BENDS.items():
            for k, bend in enumerate(bends):
                def make(side=side, bend=bend, s=seed * 100 + n * 10 + k):
                    return bent_print(model, side, bend, 30.0, 1.0, fps=fps, seed=s)

                out.append(Trial(kind, side, make, f"{kind} {bend}, turned {side} 30deg"))
        for k, deg in enumerate(SWITCH_DEGS):
            for kind, fade in (("switch_cut", 0), ("switch_fade", 4)):
                def make(side=side, deg=deg, fade=fade, s=seed * 100 + n * 10 + k):
                    return photo_switch(model, side, deg, fade, fps=fps, seed=s)

                out.append(Trial(kind, side, make, f"{kind}: frontal, then turned {side} {deg:g}deg"))
    return out

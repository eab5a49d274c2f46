"""Reading photos for enrolment, identification and the replay camera.

Photos are decoded in memory into RGB arrays (EXIF rotation applied, alpha
dropped) and scaled so the long side is at most ``max_side`` pixels, the
frame size the pipeline is tuned for.  Nothing is ever written back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

MAX_SIDE = 640


def load_rgb(path: str | Path, max_side: int = MAX_SIDE) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", str(p))
    if p.is_dir():
        raise InputError("is a folder, not an image", str(p))
    if p.stat().st_size == 0:
        raise InputError("the file is empty", str(p), "use a JPEG or PNG photo")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.BILINEAR)
            return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    except UnidentifiedImageError:
        raise InputError("not an image (or a format that cannot be read)", str(p), "use a JPEG or PNG photo") from None
    except PermissionError:
        raise InputError("cannot be read: permission denied", str(p)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"the image is damaged: {exc}", str(p), "use another photo") from None


def scale_to(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Downscale a camera frame in memory so its long side is at most ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    return cv2.resize(image, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA)

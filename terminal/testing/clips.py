"""Rendered frames held JPEG-compressed in memory and decoded one at a time when the replay camera reads them.

A rendered head turn is 30-40 frames of 640x480 RGB (about 0.9 MB each); compressed at quality 95 a
frame takes about a tenth of that, and decoding one costs a few milliseconds on the camera's thread.
Nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

QUALITY = 95


class JpegClip(Sequence):
    """A read-only sequence of RGB frames stored as JPEG bytes; ``clip[i]`` decodes frame i."""

    def __init__(self, frames: Iterable[np.ndarray], quality: int = QUALITY):
        import cv2

        self._jpegs: list[bytes] = []
        for rgb in frames:
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("a rendered frame could not be compressed")
            self._jpegs.append(buf.tobytes())

    @classmethod
    def from_jpegs(cls, jpegs: list[bytes]) -> JpegClip:
        """A clip over frames already compressed (by another process's JpegClip)."""
        clip = cls(())
        clip._jpegs = [bytes(j) for j in jpegs]
        return clip

    @property
    def jpegs(self) -> list[bytes]:
        """The compressed frames, in order."""
        return list(self._jpegs)

    def __len__(self) -> int:
        return len(self._jpegs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        import cv2

        bgr = cv2.imdecode(np.frombuffer(self._jpegs[i], np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    @property
    def nbytes(self) -> int:
        """The compressed size held, in bytes."""
        return sum(len(j) for j in self._jpegs)

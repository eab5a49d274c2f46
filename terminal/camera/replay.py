"""The replay camera: images from a folder (sorted by name) or a video file, as frames.

It paces frames at ``fps`` like a real camera: the sensor keeps its own clock and a reader that was busy
gets the newest frame, the ones it had no time for are gone (:attr:`ReplayCamera.dropped` counts them),
each stamped with the time it was captured.  ``paced=False`` returns every frame as fast as asked, for
the CLI and benchmarks, stamped with the source's own time: frame n at n / fps.  It loops or ends.  A video can be cut to frames
``first``..``last`` (0-based, inclusive).  Images are
decoded at open time and held in memory (shown frames may be a sequence that decodes each
frame as it is read); nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import HardwareError, InputError, UsageError
from ..face.images import load_rgb, scale_to
from ..native_stderr import quiet_native_stderr
from . import Camera, Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".h264"}


class ReplayCamera(Camera):
    def __init__(self, files: list[Path] | None = None, video: Path | None = None,
                 fps: float = 10.0, loop: bool = True, paced: bool = True, first: int = 0, last: int | None = None,
                 frames: list[np.ndarray] | None = None, speed: float = 1.0):
        """``frames``: RGB frames already in memory (rendered or decoded); then ``files`` only names them.

        ``speed`` (paced only): the scene's clock against the wall clock.  Below 1 the scene plays in slow
        motion: the sensor captures ``fps * speed`` frames a second, each stamped in the scene's time (capture
        k at k / fps), as a machine that many times faster would have seen it at full speed.  For a terminal
        run under emulation (``make arm64-check``), where the head-turn check's limits, in the frames' own
        time, could never be met by a reader ten times slower."""
        if not 0 < speed <= 1:
            raise ValueError(f"replay speed {speed!r} must be above 0 and at most 1")
        super().__init__()
        self.speed = speed
        self.files = list(files or [])
        self.video = video
        self.fps = fps
        self.loop = loop
        self.paced = paced
        self._frames: Sequence[np.ndarray] = list(frames or [])
        self._cap = None
        self._i = 0
        self.first, self.last = first, last
        self._n = 0          # frames handed out since open
        self._t0 = 0.0
        self._tick = -1      # paced: the sensor's last capture handed out (capture k at t0 + k / fps)
        self.dropped = 0     # paced: captures the reader had no time for

    @classmethod
    def from_path(cls, path: str | Path, **kw) -> "ReplayCamera":
        p = Path(path)
        if not str(path) or not p.exists():
            raise HardwareError("replay source not found", str(p), "set [camera] replay_path to a folder of images or a video")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise HardwareError("replay folder holds no images", str(p))
            return cls(files=files, **kw)
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return cls(video=p, **kw)
        return cls(files=[p], **kw)

    def describe(self) -> dict:
        src = str(self.video) if self.video else f"{len(self.files)} images"
        d = {"backend": "replay", "source": src, "fps": self.fps, "loop": self.loop}
        return d | ({"speed": self.speed} if self.speed != 1 else {})

    def _open_device(self) -> None:
        self._i = 0
        self._n = 0
        self._tick, self.dropped = -1, 0
        if self.video is not None:
            import cv2

            self._cap = cv2.VideoCapture(str(self.video))
            if not self._cap.isOpened():
                raise HardwareError("video cannot be opened", str(self.video))
            if self.first:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, self.first)
        elif not self._frames:
            self._frames = [load_rgb(f) for f in self.files]
        self._t0 = time.monotonic()   # the sensor's clock starts once the device is open

    def show(self, frames: Sequence[np.ndarray], files: list[Path] | None = None) -> None:
        """Show these frames from the next read on, from the first (the scene in front of the camera changed).

        ``frames`` is kept as given (a list, or a sequence that decodes a frame when it is read, such as
        ``terminal.testing.clips.JpegClip``), not copied; the previous frames are let go."""
        self._frames = frames
        self.files = list(files or [])
        self._i = 0
        if self.paced and self.is_open:   # the new scene's first frame is the sensor's next capture
            self._tick = max(self._tick, self._sensor_tick(time.monotonic()) - 1)

    def _sensor_tick(self, now: float) -> int:
        """The sensor's capture at wall-clock ``now``: it captures ``fps * speed`` frames a second."""
        return int((now - self._t0) * self.fps * self.speed)

    def _stamp(self) -> float:
        n, self._n = self._n, self._n + 1
        return self._t0 + self._tick / self.fps if self.paced else self._t0 + n / self.fps

    def _capture(self) -> int:
        """Paced: wait for the sensor's next capture unless a newer one than the last handed out is there;
        returns how many captures were skipped (a reader busy for longer than a frame misses them)."""
        now = time.monotonic()
        tick = self._sensor_tick(now)
        if tick <= self._tick:
            tick = self._tick + 1
            time.sleep(max(0.0, self._t0 + tick / (self.fps * self.speed) - now))
        skipped, self._tick = tick - self._tick - 1, tick
        self.dropped += skipped
        return skipped

    def _read(self) -> Frame | None:
        skipped = self._capture() if self.paced else 0
        if self._cap is not None:
            for _ in range(skipped):
                if self.last is not None and self.first + self._n > self.last:
                    return None
                self._n += 1
                self._cap.grab()
            if self.last is not None and self.first + self._n > self.last:
                return None
            ok, bgr = self._cap.read()
            if not ok and self.loop:
                self._cap.set(1, 0)  # CAP_PROP_POS_FRAMES
                ok, bgr = self._cap.read()
            if not ok:
                return None
            return Frame(scale_to(np.ascontiguousarray(bgr[:, :, ::-1])), self._stamp())
        self._i += skipped
        if self._i >= len(self._frames):
            if not self.loop or not self._frames:
                return None
            self._i %= len(self._frames)
        frame = self._frames[self._i]
        self._i += 1
        return Frame(frame, self._stamp())

    def _close_device(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def single_image(path: str | Path) -> ReplayCamera:
    """A camera that shows one photo once (``facepay sale --face IMAGE``); errors name the photo."""
    p = Path(path)
    # decoded now so a bad photo fails before any state changes
    return ReplayCamera(files=[p], frames=[load_rgb(p)], loop=False, paced=False)


def open_clip(video: str | None, frames: str | None, fps: float | None, first: int = 0, last: int | None = None):
    """A replay camera over a video file (frames first..last) or a folder of frames, with the source's own clock."""
    if fps is not None and not 1 <= fps <= 240:
        raise UsageError(f"--fps {fps:g} must be between 1 and 240", "--fps")
    if frames is not None:
        folder = Path(frames)
        if not folder.is_dir():
            raise InputError("not a folder of frames", frames)
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError("the folder holds no images", frames, "frames are .jpg or .png files, read in name order")
        cam = ReplayCamera(files=files, fps=fps or 30.0, loop=False, paced=False)
    else:
        import cv2

        p = Path(video)
        if not p.is_file():
            raise InputError("no such video file", video)
        with quiet_native_stderr():   # FFmpeg names what is wrong with a bad file on fd 2; our error says it once
            cap = cv2.VideoCapture(str(p))
            readable = cap.isOpened() and cap.read()[0]
        if not readable:
            raise InputError("not a video OpenCV can read", video, "use an .mp4, .avi or .mkv file")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        own = float(cap.get(cv2.CAP_PROP_FPS) or 0)
        cap.release()
        if first < 0 or (last is not None and last < first):
            raise UsageError("--start-frame must be 0 or more and --end-frame not before it", "liveness")
        if count and first >= count:
            raise UsageError(f"--start-frame {first} is past the video's last frame ({count - 1})", "--start-frame")
        cam = ReplayCamera(video=p, fps=fps or (own if 1 <= own <= 240 else 30.0), loop=False, paced=False,
                           first=first, last=last)
    try:
        cam.open()
    except HardwareError as exc:
        raise InputError(exc.what, exc.where) from None
    return cam


__all__ = ["ReplayCamera", "single_image", "open_clip", "InputError"]

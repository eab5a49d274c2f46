"""Camera backends: the replay camera (folder, video, loop, pacing), and clear errors from the real ones."""

import time

import numpy as np
import pytest
from conftest import FACES

from terminal.camera import make_camera
from terminal.camera.replay import IMAGE_SUFFIXES, ReplayCamera, single_image
from terminal.config import CameraConfig, parse_config
from terminal.errors import ConfigError, HardwareError, InputError
from terminal.face.images import load_rgb


def test_replay_folder_loops_and_is_paced(tmp_path):
    cam = make_camera(CameraConfig(backend="replay", replay_path=str(FACES), fps=20.0, loop=True))
    with pytest.raises(RuntimeError, match="closed"):
        cam.read()
    cam.open()
    assert cam.is_open and cam.opened_count == 1
    t0 = time.monotonic()
    frames = [cam.read() for _ in range(9)]  # 7 photos, then it starts again
    dt = time.monotonic() - t0
    cam.close()
    assert not cam.is_open
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert max(max(f.image.shape[:2]) for f in frames) <= 640
    # each frame is the photo the sensor captured at its timestamp (capture k at k / fps; a read late by
    # more than a frame on a loaded machine gets the newest capture, as a real camera's reader does)
    photos = [load_rgb(p) for p in sorted(p for p in FACES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)]
    assert len(photos) == 7
    ticks = [round((f.timestamp - frames[0].timestamp) * 20.0) for f in frames]
    assert ticks == sorted(set(ticks)) and ticks[-1] >= 8, ticks
    first = next(i for i, p in enumerate(photos) if np.array_equal(p, frames[0].image))
    assert all(np.array_equal(f.image, photos[(first + k) % 7]) for f, k in zip(frames, ticks))
    # the first read takes the capture already there, each later one waits for a newer capture: the reads
    # span at least all but one of the periods between the first and the last capture
    assert dt >= (ticks[-1] - ticks[0] - 1) / 20.0, ("frames come at the configured rate", dt, ticks)


def test_replay_paced_like_a_sensor_a_busy_reader_misses_frames():
    """A real camera keeps capturing while the terminal is busy: the next read is the newest capture, the
    ones in between are gone (counted), and every frame is stamped when it was captured."""
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(40)]
    cam = ReplayCamera(frames=frames, fps=20.0, loop=False, paced=True)
    with cam:
        a = cam.read()
        time.sleep(0.33)                  # a slow frame: about 6 captures pass
        b = cam.read()
        c = cam.read()                    # read at once: waits for the next capture
        assert int(a.image[0, 0, 0]) == 0
        skipped = int(b.image[0, 0, 0]) - 1
        assert 4 <= skipped <= 12 and cam.dropped == skipped, (skipped, cam.dropped)
        assert int(c.image[0, 0, 0]) == int(b.image[0, 0, 0]) + 1 and cam.dropped == skipped
        assert abs((b.timestamp - a.timestamp) * 20.0 - (skipped + 1)) < 1e-6   # capture times
        assert abs((c.timestamp - b.timestamp) - 1 / 20.0) < 1e-6
        cam.show(frames[:3])              # a new scene: its first frame is the next capture
        assert int(cam.read().image[0, 0, 0]) == 0


def test_replay_slow_motion_stamps_frames_in_the_scenes_time():
    """``[camera] replay_speed`` below 1: the sensor captures fps * speed frames a second of the wall clock,
    stamped in the scene's own time (capture k at k / fps), so a reader that took a whole wall-clock frame
    period misses no capture of the scene."""
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(40)]
    cam = make_camera(CameraConfig(backend="replay", replay_path=str(FACES), fps=20.0, replay_speed=0.25))
    assert cam.describe()["speed"] == 0.25
    cam = ReplayCamera(frames=frames, fps=20.0, loop=False, paced=True, speed=0.25)
    with cam:
        t0 = time.monotonic()
        got = [cam.read()]
        time.sleep(0.05)                  # a full period at 20 fps, a fifth of one in slow motion
        got += [cam.read() for _ in range(4)]
        dt = time.monotonic() - t0
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 1, 2, 3, 4] and cam.dropped == 0
    assert all(abs((b.timestamp - a.timestamp) - 1 / 20.0) < 1e-6 for a, b in zip(got, got[1:]))
    assert dt >= 3 / (20.0 * 0.25), ("five captures of the scene span four periods of 0.2 s; the first is there", dt)
    with pytest.raises(ValueError, match="speed"):
        ReplayCamera(frames=frames, speed=0)
    with pytest.raises(ConfigError, match="replay_speed"):
        parse_config('terminal_id = "t1"\n[camera]\nreplay_speed = 2\n', "t.toml")


def test_replay_once_ends(tmp_path):
    cam = ReplayCamera(files=[FACES / "obama.jpg", FACES / "biden.jpg"], loop=False, paced=False)
    with cam:
        got = [cam.read(), cam.read(), cam.read()]
    assert got[0] is not None and got[1] is not None and got[2] is None


def test_replay_video_file(tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(5):
        frame = np.zeros((240, 320, 3), np.uint8)
        frame[:, :, 2] = 40 * i  # red rises frame by frame (BGR order in the file)
        w.write(frame)
    w.release()
    cam = make_camera(CameraConfig(backend="replay", replay_path=str(video), loop=False))
    cam.paced = False
    with cam:
        frames = []
        while (f := cam.read()) is not None:
            frames.append(f)
    assert len(frames) == 5
    reds = [int(f.image[..., 0].mean()) for f in frames]  # RGB now: red first
    assert reds == sorted(reds) and reds[-1] > reds[0] + 100


def test_replay_errors(tmp_path):
    with pytest.raises(HardwareError, match="not found"):
        make_camera(CameraConfig(backend="replay", replay_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HardwareError, match="no images"):
        make_camera(CameraConfig(backend="replay", replay_path=str(tmp_path / "empty")))
    bad = tmp_path / "x.jpg"
    bad.write_text("not a photo")
    with pytest.raises(InputError, match="not an image"):
        single_image(bad)


def test_webcam_that_is_not_there():
    cam = make_camera(CameraConfig(backend="opencv", device=97))
    with pytest.raises(HardwareError, match="webcam 97 cannot be opened"):
        cam.open()
    assert not cam.is_open


def test_picamera2_missing_says_how_to_install():
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    cam = make_camera(CameraConfig(backend="picamera2"))
    with pytest.raises(HardwareError, match="python3-picamera2"):
        cam.open()


def test_reader_errors_name_the_fix():
    from firmware_bridge.pn532 import PN532Error
    from firmware_bridge.service import describe_open_error

    assert "dialout" in describe_open_error("/dev/serial0", PermissionError(13, "Permission denied"))
    assert "does not exist" in describe_open_error("/dev/ttyUSB3", FileNotFoundError(2, "No such file"))
    msg = describe_open_error("/dev/serial0", PN532Error("no ACK"))
    assert "serial console" in msg and "TX/RX" in msg

"""Native libraries' messages on file descriptor 2 (MediaPipe's LiteRT, OpenCV's FFmpeg).

They write straight to fd 2, past Python's ``sys.stderr``, so a CLI's one clear line of error would
come with lines of theirs.  Calls that make them talk run inside :func:`quiet_native_stderr`.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr(heard: list[bytes] | None = None):
    """Silence native libraries' banners on fd 2 (set FACEPAY_DEBUG=1 to see them).

    With ``heard``, what they wrote is kept in memory (a memfd, never a file on disk) and appended to it.
    """
    if os.environ.get("FACEPAY_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    sink = os.memfd_create("facepay-native-stderr") if heard is not None else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if heard is not None:
            os.lseek(sink, 0, os.SEEK_SET)
            heard.append(os.read(sink, 1 << 16))
        os.close(sink)

"""The kiosk's malloc settings: at most two glibc malloc arenas (benchmarks/README.md, "Memory").

glibc gives each thread that allocates concurrently an arena of its own, up to eight per core, and
memory freed in one arena is not reused by another: the kiosk's threads (UI, face worker, reader,
camera, mediapipe's and OpenCV's pools) kept about 35 MB more resident with the default.  The systemd
unit sets ``MALLOC_ARENA_MAX=2``; ``facepay run`` applies the same limit with ``mallopt`` before its
threads start, unless the environment already sets one (glibc read it at start-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENA_MAX = 2
M_ARENA_MAX = -8   # glibc's malloc.h


def limit_malloc_arenas(n: int = ARENA_MAX) -> bool:
    """True when the limit is in force (set here or by MALLOC_ARENA_MAX); False where glibc is not the libc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):   # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_ARENA_MAX, n) == 1

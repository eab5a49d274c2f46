"""The kiosk's malloc settings (benchmarks/README.md, "Memory").

- At most two glibc malloc arenas.  glibc gives each thread that allocates concurrently an arena of its
  own, up to eight per core, and memory freed in one arena is not reused by another: the kiosk's threads
  (UI, face worker, reader, camera, mediapipe's and OpenCV's pools) kept about 35 MB more resident with
  the default.
- A fixed mmap threshold of 1 MiB.  glibc's threshold is dynamic: freeing a block it had mapped on its
  own (the 22 MB of a model file read for its checksum, say) raises the threshold to that block's size,
  and the trim threshold to twice that, so every later block up to that size comes from the heap, and
  up to twice that stays resident at the heap's top when freed.  Fixed at 1 MiB, blocks above it are
  mapped on their own and go back to the system when freed, while a camera frame (640x480x3, 0.9 MB)
  still comes from the heap, reused frame after frame.
- A trim threshold of 8 MiB: the heap gives freed memory at its top back to the system once there is
  more than that.  (glibc's default once the threshold is fixed, 128 KiB, gave back and faulted in a
  frame's worth of pages again and again: the scan frame took 16% longer.)

The systemd unit sets ``MALLOC_ARENA_MAX=2``, ``MALLOC_MMAP_THRESHOLD_=1048576`` and
``MALLOC_TRIM_THRESHOLD_=8388608``; ``facepay run`` applies the same with ``mallopt`` before its threads
start and its models load, each unless the environment already sets it (glibc read it at start-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENA_MAX = 2
MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024
M_ARENA_MAX = -8        # glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1


def _libc_function(name: str):
    """A function of the C library, or None (no C library found, or not one that has it: musl has no mallopt)."""
    lib = ctypes.util.find_library("c")
    if not lib:
        return None
    try:
        return getattr(ctypes.CDLL(lib), name)
    except (OSError, AttributeError):
        return None


def _mallopt(param: int, value: int, env: str) -> bool:
    """True when the setting is in force (set here, or by ``env`` at start-up); False where glibc is not the libc."""
    if os.environ.get(env):
        return True
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(param, value) == 1


def limit_malloc_arenas(n: int = ARENA_MAX) -> bool:
    """True when the limit is in force (set here or by MALLOC_ARENA_MAX); False where glibc is not the libc."""
    return _mallopt(M_ARENA_MAX, n, "MALLOC_ARENA_MAX")


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """True when the threshold is fixed (here or by MALLOC_MMAP_THRESHOLD_); False where glibc is not the libc."""
    return _mallopt(M_MMAP_THRESHOLD, nbytes, "MALLOC_MMAP_THRESHOLD_")


def fix_trim_threshold(nbytes: int = TRIM_THRESHOLD) -> bool:
    """True when the threshold is fixed (here or by MALLOC_TRIM_THRESHOLD_); False where glibc is not the libc."""
    return _mallopt(M_TRIM_THRESHOLD, nbytes, "MALLOC_TRIM_THRESHOLD_")


def tune_malloc() -> bool:
    """The kiosk's three settings; True when all are in force."""
    done = [limit_malloc_arenas(), fix_mmap_threshold(), fix_trim_threshold()]
    return all(done)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_stats() -> dict[str, int] | None:
    """glibc's ``mallinfo2`` over all arenas, bytes: ``in_use`` (allocated from the arenas), ``free`` (freed but
    kept inside them: resident where it was touched), ``mmapped`` (blocks mapped on their own).  None where
    the libc has no mallinfo2 (not glibc, or glibc before 2.33).  For benchmarks/memory.py and the tests."""
    mallinfo2 = _libc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _Mallinfo2
    m = mallinfo2()
    return {"in_use": m.uordblks, "free": m.fordblks, "mmapped": m.hblkhd}

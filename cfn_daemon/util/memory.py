"""Give freed socket buffers back to the OS (glibc only; elsewhere a no-op).

Many connections each growing a frame buffer at once interleave their allocations
on the heap; after they close, glibc keeps the freed, fragmented pages. Serving
large buffers from mmap (a fixed threshold, not glibc's self-raising one) returns
them to the OS on free, and ``trim`` releases what fragmentation still holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

# mallopt(3) parameter number of M_MMAP_THRESHOLD in glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
_TRIM_EVERY_S = 1.0

_libc: ctypes.CDLL | None = None
_last_trim = 0.0


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6")
            lib.mallopt  # noqa: B018 - glibc (musl has no mallopt/malloc_trim)
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


def use_mmap_for_large_buffers() -> bool:
    """Serve allocations of ``MMAP_THRESHOLD_BYTES`` and more from mmap; True if applied."""
    lib = _load()
    return bool(lib is not None and lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim(*, force: bool = False) -> None:
    """Return free heap pages to the OS; at most once per second (it walks the heap)
    unless ``force`` (the last of a burst)."""
    global _last_trim
    lib = _load()
    now = time.monotonic()
    if lib is None or (not force and now - _last_trim < _TRIM_EVERY_S):
        return
    _last_trim = now
    lib.malloc_trim(0)

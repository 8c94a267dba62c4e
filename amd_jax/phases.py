"""Long phases announce themselves: '<what> ...' when they start and '<what>: done in N s (<result>)' when they end,
so a run never sits silent (the teacher's report, each step's compilation, sample generation, evaluations).
Also whether a compilation came from JAX's persistent compilation cache (`CompileCacheHits`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import jax

log = logging.getLogger("amd_jax")


@contextlib.contextmanager
def announced(what: str):
    """Logs '<what> ...' now and, when the block ends without an error, '<what>: done in N s' plus the text the
    block put in the yielded dict's 'result' (e.g. the figures it computed)."""
    log.info("%s ...", what)
    note, t0 = {}, time.time()
    yield note
    result = note.get("result")
    log.info("%s: done in %.1f s%s", what, time.time() - t0, f"; {result}" if result else "")


class CompileCacheHits:
    """Counts JAX's '/jax/compilation_cache/cache_hits' monitoring events (recorded when an executable is loaded
    from the persistent compilation cache instead of compiled); `source()` after a compilation says where its
    executable came from. One listener for the process, registered on first use (jax.monitoring has no per-call
    scope)."""

    _lock, _hits, _registered = threading.Lock(), 0, False

    def __init__(self):
        cls = type(self)
        with cls._lock:
            if not cls._registered:
                jax.monitoring.register_event_listener(cls._on_event)
                cls._registered = True
        self.start = cls._hits

    @classmethod
    def _on_event(cls, event: str, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            with cls._lock:
                cls._hits += 1

    def hits(self) -> int:
        """Cache hits since this object was made."""
        return type(self)._hits - self.start

    def source(self) -> str:
        if self.hits():
            return "loaded from the persistent compilation cache"
        if not (jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir):
            return "compiled (persistent compilation cache off)"
        return "compiled (not in the persistent compilation cache)"

"""This process's context for job bodies: opened once from the environment (settings,
DB engine, vector store, encoders) and kept, so a worker loads each model once, not
once per job. A worker that opened its own context, or a test, binds it instead."""

from __future__ import annotations

import os
import threading

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import load_settings

_lock = threading.Lock()
_context: ServiceContext | None = None
_context_pid: int | None = None


def bind_context(ctx: ServiceContext | None) -> None:
    """Use ``ctx`` for jobs run by this process (a worker that opened it, or a test)."""
    global _context, _context_pid
    with _lock:
        _context, _context_pid = ctx, (os.getpid() if ctx is not None else None)


def job_context() -> ServiceContext:
    """This process's context, opened from the environment on first use."""
    global _context, _context_pid
    with _lock:
        # A forked child must not reuse its parent's DB connections or HTTP clients.
        if _context is None or _context_pid != os.getpid():
            _context = open_context(load_settings())
            _context_pid = os.getpid()
            engine = _context.engine
            os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        return _context

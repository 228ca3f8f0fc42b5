"""The one interface the worker uses to turn a batch of prompts into images.

This module is imported by the Celery app in the parent process, before prefork children are
forked. It must therefore never import torch or diffusers at module level: touching CUDA before
fork breaks CUDA in every child. Engines are imported lazily by :func:`load_engine`, which each
child calls on its first task.
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import TYPE_CHECKING

from .interface import Engine, Request, Result, default_device

if TYPE_CHECKING:
    from contract.settings import Settings

__all__ = ["Engine", "Request", "Result", "default_device", "load_engine"]


_lock = threading.Lock()
_engine: Engine | None = None


def load_engine(model: str, settings: Settings | None = None) -> Engine:
    """Return the process's engine for ``model``, loading it on first use.

    Exactly one model stays loaded per process: asking for another model drops the cached one
    before loading, so two pipelines never share the GPU. Called from a prefork child, this loads
    after the fork. Which engine (torch or TensorRT) follows ``settings.engine``; see ``select.py``.
    """
    global _engine
    with _lock:
        if _engine is not None and _engine.model == model:
            return _engine
        if _engine is not None:
            _engine = None
            _release_memory()
        if settings is None:
            from contract.settings import get_settings

            settings = get_settings()
        from .select import open_engine

        _engine = open_engine(model, settings, device=default_device())
        return _engine


def _release_memory() -> None:
    """Free a dropped pipeline now rather than at the next GC, so its replacement fits on the GPU."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()

"""The one interface the worker uses to turn a batch of prompts into images.

This module is imported by the Celery app in the parent process, before prefork children are
forked. It must therefore never import torch or diffusers at module level: touching CUDA before
fork breaks CUDA in every child. Engines are imported lazily by :func:`load_engine`, which each
child calls on its first task.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from contract.identity import SEED_LIMIT

if TYPE_CHECKING:
    import PIL.Image

    from contract.settings import Settings

__all__ = ["Engine", "Request", "Result", "default_device", "load_engine"]


@dataclass(frozen=True)
class Request:
    """One GPU batch. All items share size, steps and guidance; each has its own prompt and seed.

    ``negatives[i] == ""`` means no negative prompt. Not validated on construction, so that a
    malformed request reaches :meth:`Engine.generate` and fails there with a ``ValueError``.
    """

    prompts: list[str]
    negatives: list[str]
    seeds: list[int]
    width: int
    height: int
    steps: int
    guidance: float

    def validate(self) -> None:
        """Raise ``ValueError`` if the request cannot be generated as one batch."""
        if not self.prompts:
            raise ValueError("request has no prompts")
        if not (len(self.prompts) == len(self.negatives) == len(self.seeds)):
            raise ValueError(
                f"prompts, negatives and seeds differ in length: "
                f"{len(self.prompts)}, {len(self.negatives)}, {len(self.seeds)}"
            )
        if not all(isinstance(p, str) for p in (*self.prompts, *self.negatives)):
            raise ValueError("prompts and negatives must be strings")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
                raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        # Latent diffusion models work on an 8x downsampled grid.
        for name, size in (("width", self.width), ("height", self.height)):
            if not isinstance(size, int) or size <= 0 or size % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {size!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        guidance = self.guidance
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be finite and >= 0, got {self.guidance!r}")


@dataclass
class Result:
    """Images in request order (RGB) and seconds spent per stage, always including ``total``.

    ``engine_id`` names what actually generated them when that differs from the engine's own id (a TensorRT
    engine hands a shape it was not built for to its torch pipeline); None means ``Engine.engine_id``.
    """

    images: list[PIL.Image.Image]
    timings: dict[str, float]
    engine_id: str | None = None


class Engine(Protocol):
    """What the worker needs from an engine; ``engine_id`` is recorded on every image row."""

    engine_id: str
    model: str

    def generate(self, request: Request) -> Result: ...


def default_device() -> str:
    """``"cuda"`` if a GPU is usable, else ``"cpu"``; imports torch, so call it only after fork."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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

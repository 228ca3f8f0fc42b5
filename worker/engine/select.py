"""Which engine a worker process runs: ``PIXELMILL_ENGINE`` (``pixelmill worker --engine``) = auto|torch|tensorrt.

- ``torch``: the diffusers pipeline (always available).
- ``tensorrt``: the compiled engines from the engine cache. If TensorRT does not import, there is no GPU,
  or the cache has no build of this model for this GPU and TensorRT version, loading fails with
  :class:`EngineUnavailable`; the worker records that message as each item's failure (so a misconfigured
  worker is visible in the ledger, and bounded by PIXELMILL_MAX_ATTEMPTS) instead of silently running slower.
- ``auto``: TensorRT when all of that is in place, else torch. The choice and the reason are logged.

A TensorRT engine serves the shapes it was built for; a request of another size or batch goes to a torch
pipeline held beside it, and its images record the torch engine id (see :class:`Result.engine_id`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contract.params import ENGINE_NAMES

from .cache import EngineCache, Manifest, model_fingerprint

if TYPE_CHECKING:
    from contract.settings import Settings

    from .interface import Engine

log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """The engine asked for explicitly cannot run here; the message says why and what to do."""


@dataclass
class Choice:
    kind: str  # "torch" | "tensorrt"
    reason: str
    manifests: list[Manifest] = field(default_factory=list)


def tensorrt_version() -> str | None:
    """TensorRT's version if it imports, else None (never raises: a broken install counts as absent)."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return str(importlib.import_module("tensorrt").__version__)
    except Exception:  # noqa: BLE001 (a stub package, missing libnvinfer, ...)
        return None


def gpu_arch(device: str) -> str | None:
    """``sm<major><minor>`` of the current CUDA device, or None on CPU."""
    if device != "cuda":
        return None
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}"


def choose(model: str, requested: str, cache: EngineCache, device: str) -> Choice:
    """Decide torch or TensorRT for ``model``; raises :class:`EngineUnavailable` only for ``tensorrt``."""
    if requested not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, got {requested!r}")
    if requested == "torch":
        return Choice("torch", "requested")
    problem: str | None = None
    manifests: list[Manifest] = []
    trt = tensorrt_version()
    arch = gpu_arch(device)
    if trt is None:
        problem = "TensorRT does not import (pip install tensorrt, or use the NGC worker image)"
    elif arch is None:
        problem = "no CUDA device"
    else:
        manifests = cache.find(model_fingerprint(model), gpu=arch, trt_version=trt)
        if not manifests:
            problem = (
                f"no engine for this model, {arch} and TensorRT {trt} in {cache.root} "
                f"(build one with `pixelmill engine build --model {model}`)"
            )
    if problem is None:
        return Choice("tensorrt", f"{len(manifests)} build(s) in the engine cache", manifests)
    if requested == "tensorrt":
        raise EngineUnavailable(f"PIXELMILL_ENGINE=tensorrt, but {problem}")
    return Choice("torch", f"TensorRT not used: {problem}")


def open_engine(model: str, settings: Settings, device: str) -> Engine:
    """Choose, log the choice, and load the engine."""
    cache = EngineCache(settings.engine_cache_path)
    choice = choose(model, settings.engine, cache, device)
    if choice.kind == "tensorrt":
        from .trt_runtime import TensorRTEngine

        engine: Engine = TensorRTEngine(model, choice.manifests, cache, settings=settings)
    else:
        from .torch_engine import TorchEngine

        engine = TorchEngine.from_settings(model, settings, device=device)
    log.info(
        "engine selected",
        extra={"model": model, "requested": settings.engine, "engine": engine.engine_id, "reason": choice.reason},
    )
    return engine

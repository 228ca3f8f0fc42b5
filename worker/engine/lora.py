"""Brand LoRAs on a loaded pipeline (issue 25): diffusers' own LoRA API over peft; the base model is never reloaded.

A worker keeps the pipeline it loaded. A job's LoRA is loaded into it once, as an adapter named after the file's
sha256 (`load_lora_weights(path, adapter_name=...)`); each request then picks its adapter and scale with
`set_adapters`, and a request without a LoRA (or at scale 0) runs with `disable_lora()`: peft's layers then return
their base layer's output untouched, so the image is byte for byte the base model's. At most `KEEP` adapters stay
loaded; the least recently used one is deleted (`delete_adapters`), and loading it again reads only the LoRA.

A quantised or compiled UNet (PIXELMILL_TORCH_QUANT, PIXELMILL_TORCH_COMPILE) has no layers peft can wrap, so there
the LoRA is fused instead, as NVIDIA's Model Optimizer does before quantising: `FusedLoras` fuses it (diffusers'
`fuse_lora(lora_scale=...)`) into a copy of the UNet kept unoptimised, then applies the engine's optimisations to that
copy, and keeps the result per (LoRA sha256, scale) -- the engine's own base model being the rest of the key. The
TensorRT build fuses the same way before calibration and export (`fused_unet`; worker/engine/build.py).

Fused QKV projections (torch_engine.optimise) would bypass a LoRA on to_q/to_k/to_v, so a request with a LoRA runs
the UNet with its original attention processors and one without gets the fused ones back: the same fused weights
as before, so a no-LoRA image does not depend on which jobs ran on the worker before it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from .interface import Request

log = logging.getLogger(__name__)
KEEP = 8  # adapters kept loaded per pipeline (a LoRA is a few MB to a few hundred MB)


class LoraChanged(ValueError):
    """The LoRA file is not the one checked at submit (its sha256 differs); a new submit checks the new file."""


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Mute what diffusers and peft say on every load of a UNet-only LoRA into a pipeline with several adapters
    ("No LoRA keys associated to CLIPTextModel", "multiple adapters"): expected here, and noise in a worker's log."""
    names = ("diffusers.loaders.lora_base", "diffusers.loaders.lora_pipeline", "diffusers.loaders.peft")
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


class LoraSwitch:
    """Which LoRA a pipeline runs with. `blocked`: why this engine cannot take a LoRA (compiled or quantised
    UNet: peft cannot wrap those layers), or None. `loads` counts LoRA files loaded (the tests read it)."""

    def __init__(self, pipe: Any, *, model: str, blocked: str | None = None):
        self.pipe, self.model, self.blocked = pipe, model, blocked
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> path, least recently used first
        self.active: str | None = None
        self.loads = 0
        unet: Any = getattr(pipe, "unet", None)
        fused = unet is not None and getattr(unet, "original_attn_processors", None) is not None
        # Copies: set_attn_processor empties the dict it is given.
        self._fused_processors = dict(unet.attn_processors) if fused else None
        self._plain_processors = dict(unet.original_attn_processors) if fused else None

    def apply(self, request: Request) -> None:
        """Make the pipeline run as `request` asks: its LoRA at its scale, or the base model."""
        if request.lora is None or request.lora_scale == 0:
            if self.active is not None:
                self.pipe.disable_lora()
                self._fuse(True)
                self.active = None
            return
        if self.blocked:
            raise ValueError(f"this worker's engine cannot apply a LoRA: {self.blocked}")
        assert request.lora_sha256 is not None  # Request.validate
        name = "lora_" + request.lora_sha256[:16]
        if name not in self.loaded:
            self._load(request.lora, request.lora_sha256, name)
        self.loaded.move_to_end(name)
        self._fuse(False)
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], adapter_weights=[float(request.lora_scale)])
        self.active = name

    def _load(self, path: str, sha256: str, name: str) -> None:
        started = time.perf_counter()
        if file_sha256(path) != sha256:
            raise LoraChanged(f"LoRA {path!r} changed since it was checked at submit (sha256 differs); submit again")
        if len(self.loaded) >= KEEP:
            oldest, _ = self.loaded.popitem(last=False)
            self.pipe.delete_adapters(oldest)
        self._fuse(False)
        with quiet_loading():
            self.pipe.load_lora_weights(path, adapter_name=name)
        self.loaded[name] = path
        self.loads += 1
        seconds = round(time.perf_counter() - started, 3)
        log.info("lora loaded", extra={"model": self.model, "lora": path, "adapter": name, "seconds": seconds})

    def _fuse(self, fused: bool) -> None:
        if self._fused_processors is None or self._plain_processors is None:
            return  # never fused (no UNet, or fusion not supported): nothing to switch
        self.pipe.unet.set_attn_processor(dict(self._fused_processors if fused else self._plain_processors))


class LoraUnfusable(ValueError):
    """A LoRA this engine cannot fuse (it changes more than the UNet); no attempt on this engine can help."""


def _check_unet_only(path: str) -> None:
    """A LoRA that also changes the text encoders cannot be fused into the UNet alone (its images would differ from
    the peft path's): refused, with what to do."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as weights:
        others = [k for k in weights.keys() if not k.startswith("unet.")]  # noqa: SIM118 (safe_open has no __iter__)
    if others:
        raise LoraUnfusable(
            f"LoRA {path!r} changes more than the UNet ({others[0]!r}): a quantised, compiled or TensorRT engine fuses "
            "UNet LoRAs only; run its jobs on a worker without PIXELMILL_TORCH_QUANT / PIXELMILL_TORCH_COMPILE"
        )


def fused_unet(unet: Any, path: str, sha256: str, scale: float) -> Any:
    """A copy of `unet` with the LoRA at `path` fused in at `scale` (W + scale * BA, peft's layers unloaded again:
    a plain UNet, ready to quantise, compile or export). `unet` itself is left as it was. Raises LoraChanged when
    the file is not the one checked at submit, LoraUnfusable for a LoRA that changes more than the UNet."""
    if file_sha256(path) != sha256:
        raise LoraChanged(f"LoRA {path!r} changed since it was checked at submit (sha256 differs); submit again")
    _check_unet_only(path)
    fused = copy.deepcopy(unet)
    with quiet_loading():
        fused.load_lora_adapter(path, prefix="unet", adapter_name="fused")
    fused.fuse_lora(lora_scale=float(scale), adapter_names=["fused"])
    fused.unload_lora()
    return fused


class FusedLoras:
    """Which UNet a pipeline with a quantised or compiled UNet runs with (see the module docstring): its own for
    requests without a LoRA (or at scale 0), else the fused, optimised copy for the request's (sha256, scale),
    built once and kept (`KEEP_FUSED` most recently used: each is a whole UNet). `pristine`: the UNet before any
    optimisation; `optimise`: what the engine did to its own UNet, done to each fused copy. `pipes`: the
    engine's pipelines sharing the UNet (the derived inpaint / img2img ones are added as they are made).
    `loads` counts fused UNets built, each from its LoRA file (the tests read it)."""

    KEEP_FUSED = 2

    def __init__(
        self, pipe: Any, pristine: Any, optimise: Callable[[Any], Any], *, model: str, pipes: MutableMapping[str, Any]
    ) -> None:
        self.pipe, self.pristine, self.optimise, self.model, self.pipes = pipe, pristine, optimise, model, pipes
        self.base = pipe.unet
        self.unets: OrderedDict[tuple[str, float], Any] = OrderedDict()
        self.loads = 0

    def unet_for(self, request: Request) -> Any:
        if request.lora is None or request.lora_scale == 0:
            return self.base
        assert request.lora_sha256 is not None  # Request.validate
        key = (request.lora_sha256, float(request.lora_scale))
        if key not in self.unets:
            started = time.perf_counter()
            self.unets[key] = self.optimise(fused_unet(self.pristine, request.lora, *key))
            self.loads += 1
            while len(self.unets) > self.KEEP_FUSED:
                self.unets.popitem(last=False)
            seconds = round(time.perf_counter() - started, 3)
            log.info(
                "lora fused",
                extra={"model": self.model, "lora": request.lora, "scale": key[1], "seconds": seconds},
            )
        self.unets.move_to_end(key)
        return self.unets[key]

    def apply(self, request: Request) -> None:
        unet = self.unet_for(request)
        for pipe in (self.pipe, *self.pipes.values()):
            pipe.unet = unet

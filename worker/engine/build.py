"""`pixelmill engine build`: calibrate -> ONNX export -> TensorRT build -> manifest in the engine cache.

With a brand LoRA (`--lora PATH[:SCALE]`) the LoRA is fused into the UNet first (worker/engine/lora.py
`fused_unet`), so calibration, the ONNX export and the INT8/FP8 engine all see the fused weights (Model Optimizer's
order); the build's key holds the LoRA's sha256 and scale, and serves only requests with that LoRA at that scale.

Each step runs where it can: calibration and export run on CPU too (that is what CI tests, on the tiny
model); the TensorRT build needs TensorRT and a GPU, and without them the build stops after the export
with :class:`~worker.engine.trt_build.TensorRTMissing`, leaving the ONNX files for a later build.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .cache import EngineCache, EngineKey, Manifest, calibration_hash, model_fingerprint
from .onnx_export import Target, UNetSpec, export_text_encoder, export_unet, export_vae_decoder

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp8", "fp16")


@dataclass
class BuildResult:
    onnx_dir: Path
    manifest: Manifest | None  # None: stopped after the export
    final_dir: Path | None = None


def parse_batches(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    if not (low.isdigit() and (high or low).isdigit()) or not 1 <= int(low) <= int(high or low):
        raise ValueError(f"--batch must be MIN-MAX with 1 <= MIN <= MAX, e.g. 1-16, got {text!r}")
    return int(low), int(high or low)


def read_prompts(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "diffusers", "nvidia-modelopt", "onnx", "tensorrt"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def export_all(
    pipe: Any, out: Path, *, width: int, height: int, opset: int, dtype: torch.dtype, device: str
) -> dict[str, dict[str, Any]]:
    """ONNX of every network the runtime needs; returns the manifest's component table (without plans)."""
    components: dict[str, dict[str, Any]] = {}
    spec = UNetSpec.of(pipe.unet, height, width)
    target = Target(opset, dtype, device)
    export_unet(pipe.unet, spec, out / "unet.onnx", target)
    components["unet"] = {"onnx": "unet.onnx", "inputs": spec.input_names, "spec": spec.__dict__}
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None:
            export_text_encoder(encoder, out / f"{name}.onnx", target, penultimate=sdxl)
            components[name] = {"onnx": f"{name}.onnx", "penultimate": sdxl}
    vae = pipe.vae
    if getattr(vae.config, "force_upcast", False):  # SDXL's VAE overflows in fp16: diffusers decodes it in fp32
        vae = vae.to(torch.float32)
    vae_target = replace(target, dtype=vae.dtype)
    export_vae_decoder(
        vae, out / "vae_decoder.onnx", vae_target, latent_height=spec.latent_height, latent_width=spec.latent_width
    )
    components["vae_decoder"] = {"onnx": "vae_decoder.onnx", "precision": str(vae.dtype).removeprefix("torch.")}
    return components


def _fuse_lora(pipe: Any, lora: tuple[str, float] | None) -> tuple[str, float] | None:
    """Fuse the LoRA (file, scale) into `pipe`'s UNet; its (sha256, scale), or None without one (or at scale 0:
    the base model's build, exactly)."""
    from .lora import file_sha256, fused_unet

    if lora is None or lora[1] == 0:
        return None
    path, scale = lora
    sha256 = file_sha256(path)
    pipe.unet = fused_unet(pipe.unet, path, sha256, scale)
    return sha256, float(scale)


def build(
    model: str,
    *,
    precision: str,
    width: int,
    height: int,
    batch_min: int,
    batch_max: int,
    prompts: list[str],
    cache: EngineCache,
    steps: int = 30,
    guidance: float = 7.5,
    level: float = 2.5,
    alpha: float = 1.0,
    percentile: float = 1.0,
    onnx_only: bool = False,
    work_dir: Path | None = None,
    device: str | None = None,
    lora: tuple[str, float] | None = None,
) -> BuildResult:
    """Run every step that can run here; see the module docstring. `lora`: (a LoRA file, its scale) to fuse."""
    from .interface import default_device
    from .select import gpu_arch, tensorrt_version
    from .torch_engine import TorchEngine
    from .trt_build import TensorRTMissing, build_engine, import_tensorrt, profile_shapes

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = device or default_device()
    cuda = device == "cuda"  # on CPU everything runs, and is exported, in fp32
    if not onnx_only and (tensorrt_version() is None or not cuda):
        # Still calibrate and export: the ONNX files are what a TensorRT host builds from, and on CPU this is
        # the part of the recipe that can be run and tested.
        log.warning("TensorRT or CUDA missing: the build stops after the ONNX export")
    dtype = torch.float16 if cuda else torch.float32
    # the same loading as the torch engine (no safety checker); Any: the pipeline's components exist at runtime
    pipe: Any = TorchEngine._load(model, dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    fused = _fuse_lora(pipe, lora)  # before calibration and export: they see the fused weights
    if precision in ("int8", "fp8"):
        from .calibrate import quantise

        quantise(
            pipe,
            prompts,
            precision=precision,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            level=level,
            alpha=alpha,
            percentile=percentile,
        )

    fingerprint = model_fingerprint(model)
    named = f"onnx-{precision}-{width}x{height}" + (f"-lora-{fused[0][:12]}-{fused[1]:g}" if fused else "")
    out = work_dir or cache.root / fingerprint[:16] / named
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    opset = 19 if precision == "fp8" else 17
    components = export_all(pipe, out, width=width, height=height, opset=opset, dtype=dtype, device=device)
    calib = calibration_hash(prompts) if precision != "fp16" else None
    (out / "export.json").write_text(
        json.dumps(
            {
                "model": model,
                "model_hash": fingerprint,
                "precision": precision,
                "width": width,
                "height": height,
                "calibration_hash": calib,
                "calibration_prompts": len(prompts),
                "steps": steps,
                "lora": {"file": lora[0], "sha256": fused[0], "scale": fused[1]} if lora and fused else None,
                "components": components,
                "versions": _versions(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    if onnx_only:
        return BuildResult(out, None)
    trt_version, arch = tensorrt_version(), gpu_arch(device)
    if trt_version is None or arch is None:
        raise TensorRTMissing(
            f"ONNX written to {out}; the TensorRT build needs TensorRT and a CUDA GPU "
            f"(TensorRT {'found' if trt_version else 'missing'}, "
            f"CUDA {'found' if arch else 'missing'})"
        )
    import_tensorrt()

    key = EngineKey(
        fingerprint,
        precision,
        width,
        height,
        batch_min,
        batch_max,
        arch,
        trt_version,
        lora_sha256=fused[0] if fused else None,
        lora_scale=fused[1] if fused else None,
    )
    staging = cache.staging(key)
    spec = UNetSpec(**components["unet"]["spec"])
    # Classifier-free guidance doubles the UNet and text-encoder batch; guidance-free models use the batch as is.
    low, high = batch_min, 2 * batch_max
    unet_shapes = {b: spec.shapes(b) for b in (low, high)}
    text_shapes = {b: {"input_ids": (b, spec.context_len)} for b in (low, high)}
    vae_shapes = {
        b: {"latent": (b, spec.latent_channels, spec.latent_height, spec.latent_width)} for b in (batch_min, batch_max)
    }
    for name, component in components.items():
        shapes = {
            "unet": profile_shapes(unet_shapes, low, high, high),
            "vae_decoder": profile_shapes(vae_shapes, batch_min, batch_max, batch_max),
        }.get(name) or profile_shapes(text_shapes, low, high, high)
        shutil.copy2(out / component["onnx"], staging / component["onnx"])
        build_engine(out / component["onnx"], staging / f"{name}.plan", shapes)
        component["plan"] = f"{name}.plan"
        component.setdefault("precision", precision if name == "unet" else str(dtype).removeprefix("torch."))
    manifest = Manifest(
        key=key,
        model=model,
        components=components,
        calibration_hash=calib,
        calibration_prompts=len(prompts) if calib else 0,
        calibration_steps=steps if calib else 0,
        quant_level=level if calib else None,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tool_versions=_versions(),
    )
    final = cache.commit(staging, manifest)
    return BuildResult(out, manifest, final)

#!/usr/bin/env python3
"""Engine benchmark: images/s of each pixelmill engine variant against a plain diffusers fp16 pipeline, and the
fraction of the GPU's measured matrix rate it reaches.

Models are the real SD 1.5 and SDXL architectures built from their published configs (bench/configs/*.json) with
random weights: speed does not depend on weight values, and nothing is downloaded. Prompts go through the tiny
project tokenizer (speed does not depend on the vocabulary either; the 77-token context and the embedding sizes
are the real ones).

    python bench/engine.py                                   # CUDA: sd15 at 512², sdxl at 1024², 30 steps, CFG
    python bench/engine.py --models sd15 --batches 1,8 --variants baseline,torch-fp16,torch-compile
    python bench/engine.py --device cpu                      # reduced: tiny model, 64², 4 steps, batch 1/2

Timing: every (model, variant, batch) gets warm-up calls first (torch.compile and cuDNN autotuning happen
there), then ``--repeats`` timed calls of the whole text->denoise->decode path, each between CUDA events with a
synchronise; the median is reported. FLOPs per image come from ``torch.utils.flop_counter.FlopCounterMode`` on
the baseline pipeline at the same shape: calls at 1 and 2 steps give the per-step UNet cost, extrapolated to
``--steps`` (the count is the same for every variant: it is the model's arithmetic). The roofline is the dense
half-precision matmul rate measured on the same device (an 8192³ GEMM on CUDA), so INT8/FP8 variants can exceed
a fraction of 1 only through 8-bit tensor cores, whose peak is twice that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.engine import Request  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
VARIANTS = [
    "baseline",
    "torch-fp16",
    "torch-bf16",
    "torch-compile",
    "torch-int8",
    "torch-fp8",
    "trt-int8",
    "trt-fp8",
    "trt-fp16",
]
# (engine id, a callable that generates a Request's images)
Runner = tuple[str, Callable[[Request], object]]
PROMPT = "studio photo of a red ceramic mug on a white background, soft light, product shot"


@dataclass
class Row:
    model: str
    size: str
    steps: int
    variant: str  # baseline, torch-fp16, torch-compile, trt-int8 … (--variants)
    batch: int  # images per pipeline call
    engine_id: str = ""  # what the engine reported it ran (a fallback shows here)
    ms_per_image: float | None = None
    images_per_s: float | None = None
    speedup: float | None = None
    tflop_per_image: float | None = None
    tflops: float | None = None
    roofline: float | None = None
    note: str = ""
    runs_ms: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Models


def build_pipeline(name: str, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """A random-weight pipeline of architecture ``name`` (sd15, sdxl, or tiny) on ``device`` in ``dtype``."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from worker.engine.tiny import build_tokenizer

    if name == "tiny":
        import tempfile

        from worker.engine.tiny import build_tiny_pipeline

        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny_pipeline(Path(tmp) / "tiny", seed=seed)
            pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device, dtype)
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    tokenizer = build_tokenizer()
    classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}

    def encoder(cfg: dict[str, Any]) -> torch.nn.Module:
        cfg = dict(cfg)
        cls = classes[cfg.pop("class")]
        model: torch.nn.Module = cls(
            CLIPTextConfig(
                **cfg,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        return model

    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU directly: minutes faster than on CPU for SDXL
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel(**config["unet"]),
            "vae": AutoencoderKL(**config["vae"]),
            "text_encoder": encoder(config["text_encoder"]),
        }
        if "text_encoder_2" in config:
            parts["text_encoder_2"] = encoder(config["text_encoder_2"])
    scheduler = EulerDiscreteScheduler(**config["scheduler"])
    if config["pipeline"] == "StableDiffusionXLPipeline":
        pipe = StableDiffusionXLPipeline(**parts, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler)
    else:
        unchecked = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        pipe = StableDiffusionPipeline(**parts, tokenizer=tokenizer, scheduler=scheduler, **unchecked)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


# ---------------------------------------------------------------------------------------------------------
# Measurements


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each timed call: CUDA events on GPU, perf_counter on CPU, synchronised either way."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return times


def matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Dense matmul FLOP/s measured here: the roofline's compute ceiling."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = statistics.median(time_call(lambda: a @ b, device, warmup=3, repeats=10 if device == "cuda" else 3))
    return 2 * n**3 / (ms / 1000)


def count_flops(pipe: Any, request: Request, steps: int, device: str) -> float:
    """FLOPs per image of a whole ``steps``-step call, from counted 1- and 2-step calls."""
    from torch.utils.flop_counter import FlopCounterMode

    def counted(n_steps: int) -> int:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            run_baseline(pipe, Request(**{**asdict_request(request), "steps": n_steps}), device)
        return int(counter.get_total_flops())

    one, two = counted(1), counted(2)
    return (one + (steps - 1) * (two - one)) / len(request.prompts)


def square_request(prompts: list[str], size: int, steps: int, guidance: float) -> Request:
    """The benchmarks' batch: `prompts` at size² px, each with the negative prompt "blurry" and its index as seed."""
    n = len(prompts)
    return Request(prompts, ["blurry"] * n, list(range(n)), size, size, steps, guidance)


def asdict_request(request: Request) -> dict[str, Any]:
    return {k: getattr(request, k) for k in ("prompts", "negatives", "seeds", "width", "height", "steps", "guidance")}


def run_baseline(pipe: Any, request: Request, device: str) -> list[PILImage.Image]:
    """What a user of plain diffusers would write."""
    generators = [torch.Generator(device).manual_seed(s) for s in request.seeds]
    images: list[PILImage.Image] = pipe(
        prompt=request.prompts,
        negative_prompt=request.negatives,
        **{"width": request.width, "height": request.height},
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=generators,
    ).images
    return images


# ---------------------------------------------------------------------------------------------------------
# Variants


def variant_runner(variant: str, model: str, device: str, args: argparse.Namespace) -> Runner:
    """(engine id, callable taking a Request) for ``variant``, or raise Unavailable with the reason."""
    cuda = device == "cuda"
    half = torch.float16 if cuda else torch.float32
    if variant == "baseline":
        pipe = build_pipeline(model, device, half)
        return f"diffusers-{'fp16' if cuda else 'fp32'}-{device}", lambda r: run_baseline(pipe, r, device)
    if variant.startswith("trt-"):
        return trt_runner(variant, model, device, args)
    from worker.engine.torch_engine import TorchEngine

    options: dict[str, dict[str, Any]] = {
        "torch-fp16": {},
        "torch-bf16": {"dtype": "bf16"},
        "torch-compile": {"compile": True},
        "torch-int8": {"quant": "int8"},
        "torch-fp8": {"quant": "fp8"},
    }
    if variant not in options:
        raise Unavailable(f"unknown variant {variant}")
    kwargs: dict[str, Any] = {"dtype": "fp16", **options[variant]}
    if not cuda and variant in ("torch-bf16", "torch-fp8"):
        raise Unavailable("needs CUDA")
    if variant == "torch-fp8" and torch.cuda.get_device_capability() < (8, 9):
        raise Unavailable("FP8 needs compute capability 8.9+")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[kwargs["dtype"]] if cuda else torch.float32
    pipe = build_pipeline(model, device, dtype)
    try:
        engine = TorchEngine(model, device=device, pipeline=pipe, **kwargs)
    except ImportError as exc:
        raise Unavailable(f"missing package: {exc.name}") from exc
    return engine.engine_id, engine.generate


def trt_runner(variant: str, model: str, device: str, args: argparse.Namespace) -> Runner:
    from worker.engine.cache import EngineCache, model_fingerprint
    from worker.engine.select import gpu_arch, tensorrt_version

    version = tensorrt_version()
    if version is None:
        raise Unavailable("TensorRT not installed")
    if device != "cuda":
        raise Unavailable("needs CUDA")
    if args.models_dir is None:
        raise Unavailable("needs --models-dir with saved models and `pixelmill engine build` run on them")
    path = Path(args.models_dir) / model
    precision = variant.removeprefix("trt-")
    cache = EngineCache(args.engine_cache or (ROOT / "pixelmill-data" / "engines"))
    builds = [
        m
        for m in cache.find(model_fingerprint(str(path)), gpu=gpu_arch(device) or "", trt_version=version)
        if m.key.precision == precision
    ]
    if not builds:
        raise Unavailable(f"no {precision} build of {path} in {cache.root}")
    from worker.engine.trt_runtime import TensorRTEngine

    engine = TensorRTEngine(str(path), builds, cache)
    return engine.engine_id, engine.generate


class Unavailable(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device; use --device cpu for the reduced run")
    half = torch.float16 if cuda else torch.float32
    peak = matmul_rate(device, half)
    rows: list[Row] = []
    for model in args.models:
        size = args.size or (
            json.loads((CONFIGS / f"{model}.json").read_text())["default_size"] if model != "tiny" else 64
        )
        flops: dict[int, float] = {}
        baseline_ms: dict[int, float] = {}
        for variant in args.variants:
            try:
                engine_id, generate = variant_runner(variant, model, device, args)
            except Unavailable as exc:
                rows += [
                    Row(model, f"{size}x{size}", args.steps, variant, b, note=f"skipped: {exc}") for b in args.batches
                ]
                continue
            for batch in args.batches:
                request = square_request([f"{PROMPT} {i}" for i in range(batch)], size, args.steps, args.guidance)
                row = Row(model, f"{size}x{size}", args.steps, variant, batch, engine_id=engine_id)
                try:
                    with torch.inference_mode():
                        warmup = args.warmup + (2 if variant == "torch-compile" else 0)
                        times = time_call(functools.partial(generate, request), device, warmup, args.repeats)
                except torch.cuda.OutOfMemoryError:
                    row.note = "out of memory"
                    torch.cuda.empty_cache()
                    rows.append(row)
                    continue
                ms = statistics.median(times)
                row.runs_ms = [round(t, 2) for t in times]
                row.ms_per_image = ms / batch
                row.images_per_s = 1000 * batch / ms
                if variant == "baseline":
                    baseline_ms[batch] = row.ms_per_image
                if batch in baseline_ms:
                    row.speedup = baseline_ms[batch] / row.ms_per_image
                rows.append(row)
            del generate  # drop the variant's pipeline before building the next one
            if cuda:
                torch.cuda.empty_cache()
        # FLOPs with the baseline architecture at each batch (identical arithmetic for every variant).
        pipe = build_pipeline(model, device, half)
        for batch in args.batches:
            request = square_request([PROMPT] * batch, size, args.steps, args.guidance)
            flops[batch] = count_flops(pipe, request, args.steps, device)
        del pipe
        for row in rows:
            if row.model == model and row.ms_per_image:
                row.tflop_per_image = flops[row.batch] / 1e12
                row.tflops = flops[row.batch] / (row.ms_per_image / 1000) / 1e12
                row.roofline = row.tflops * 1e12 / peak
        if cuda:
            torch.cuda.empty_cache()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": describe(device),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "matmul_tflops": peak / 1e12,
        "matmul_dtype": str(half).removeprefix("torch."),
        "steps": args.steps,
        "guidance": args.guidance,
        "rows": [asdict(r) for r in rows],
    }


def describe(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (sm{''.join(map(str, torch.cuda.get_device_capability()))})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown(report: dict[str, Any]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"Date {report['date']}; device {report['device']}; torch {report['torch']}; "
        f"measured {report['matmul_dtype']} matmul {report['matmul_tflops']:.1f} TFLOP/s; "
        f"{report['steps']} steps, guidance {report['guidance']}.",
        f"Command: `{report['command']}`",
        "",
        "| model | size | variant | engine id | batch | ms/image | img/s | speed-up | TFLOP/img | TFLOP/s "
        "| roofline | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['variant']} | {r['engine_id'] or '-'} | {r['batch']} "
            f"| {fmt(r['ms_per_image'], '.1f')} | {fmt(r['images_per_s'], '.2f')} "
            f"| {fmt(r['speedup'], '.2f')} | {fmt(r['tflop_per_image'], '.3g')} | {fmt(r['tflops'], '.3g')} "
            f"| {fmt(r['roofline'], '.1%')} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", type=lambda s: s.split(","), default=None, help="sd15,sdxl (CPU: tiny)")
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=None, help="square image side (default: the model's own)")
    parser.add_argument(
        "--variants", type=lambda s: s.split(","), default=None, help=f"comma list of {','.join(VARIANTS)}"
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--models-dir", default=None, help="saved models for the trt-* variants")
    parser.add_argument("--engine-cache", default=None, help="engine cache for the trt-* variants")
    parser.add_argument(
        "--save-models",
        type=Path,
        default=None,
        help="write the random-weight models (diffusers format) to DIR/<model> and stop: "
        "the input of `pixelmill engine build` for the trt-* variants",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="writes engine.md and engine.json")
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"  # the reduced form: tiny model, tiny size, few steps
    args.models = args.models or (["tiny"] if cpu else ["sd15", "sdxl"])
    args.batches = args.batches or ([1, 2] if cpu else [1, 4, 8, 16])
    args.steps = args.steps or (4 if cpu else 30)
    args.variants = args.variants or (["baseline", "torch-fp16", "torch-int8", "trt-int8"] if cpu else VARIANTS)
    args.warmup = 1 if args.warmup is None and cpu else (args.warmup if args.warmup is not None else 2)
    args.repeats = args.repeats or (3 if cpu else 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.save_models is not None:
        dtype = torch.float16 if args.device == "cuda" else torch.float32
        for model in args.models:
            build_pipeline(model, args.device, dtype).save_pretrained(args.save_models / model)
            print(f"{model} written to {args.save_models / model}")
        return 0
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "engine.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

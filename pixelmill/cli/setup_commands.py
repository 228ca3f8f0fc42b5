"""Setting up: `pixelmill db upgrade` (the ledger's schema), `model tiny` / `model tiny-judges` (random-weight
test models), `engine build` (TensorRT engines), `broker start|stop|status` (the embedded Redis) and `demo`
(everything above on the embedded defaults, in a few minutes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from contract.broker import EmbeddedRedis
from contract.params import parse_size
from contract.settings import get_settings
from pixelmill.cli.common import fail, out
from pixelmill.cli.demo import run_demo
from pixelmill.cli.status import watch_job
from producer.options import Options, option_problems

# Alembic and SQLAlchemy (the ledger), torch and diffusers (worker.engine, worker.tiny_image_checks) are imported by
# the command that needs them: `pixelmill --help` starts without them, and a host without torch runs the rest.


def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the ledger database to the latest schema."""
    from alembic.script import ScriptDirectory

    from contract.ledger import alembic_config, make_engine, upgrade

    scripts = ScriptDirectory.from_config(alembic_config())
    if revision not in ("head", "heads"):
        try:
            found = scripts.get_revision(revision)
        except Exception:
            found = None
        if found is None:
            known = ", ".join(sorted(r.revision for r in scripts.walk_revisions()))
            raise typer.BadParameter(f"no migration {revision!r}; known: {known} or head", param_hint="'REVISION'")
    engine = make_engine(get_settings())
    upgrade(engine, revision)
    out.print(f"ledger at {engine.url.render_as_string(hide_password=True)} upgraded to {revision}")


def writable_directory(directory: Path) -> Path:
    """The DIRECTORY argument of the model builders: refused when it is a file."""
    if directory.exists() and not directory.is_dir():
        raise typer.BadParameter(f"{directory} exists and is not a directory", param_hint="'DIRECTORY'")
    return directory


PipelineDir = Annotated[Path, typer.Argument(help="Where to write the pipeline.")]
WeightSeed = Annotated[int, typer.Option(help="Weight seed.")]


def model_tiny(directory: PipelineDir, seed: WeightSeed = 0) -> None:
    """Write a small random-weight Stable Diffusion pipeline (diffusers format) for demos and tests."""
    from worker.engine.tiny import build_tiny_pipeline  # torch

    path = build_tiny_pipeline(writable_directory(directory), seed=seed)
    out.print(f"tiny Stable Diffusion pipeline written to {path}")


def model_tiny_inpaint(directory: PipelineDir, seed: WeightSeed = 0) -> None:
    """Write a small random-weight Stable Diffusion inpainting pipeline (a 9-channel UNet) for background mode."""
    from worker.engine.tiny import build_tiny_inpaint_pipeline  # torch

    path = build_tiny_inpaint_pipeline(writable_directory(directory), seed=seed)
    out.print(f"tiny Stable Diffusion inpainting pipeline written to {path}")


def model_tiny_lora(
    file: Annotated[Path, typer.Argument(help="The .safetensors file to write.")], seed: WeightSeed = 0
) -> None:
    """Write a small random LoRA for the tiny models' attention layers (a brand LoRA for demos and tests)."""
    from worker.engine.tiny import build_tiny_lora  # torch, peft

    if file.is_dir() or file.suffix != ".safetensors":
        raise typer.BadParameter(f"{file} must be a file name ending in .safetensors", param_hint="'FILE'")
    out.print(f"tiny LoRA written to {build_tiny_lora(file, seed=seed)}")


def model_tiny_judges(
    directory: Annotated[Path, typer.Argument(help="Where to write the models.")],
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Write a tiny random safety checker, CLIP model and aesthetic head for demos and tests."""
    from worker.tiny_image_checks import build_tiny_judges  # torch

    for setting, path in build_tiny_judges(writable_directory(directory), seed=seed).items():
        out.print(f"PIXELMILL_{setting.upper()}={path}", highlight=False, markup=False)


def engine_lora(value: str | None) -> tuple[str, float] | None:
    """`--lora PATH[:SCALE]` of `engine build`, read as `submit --lora` reads it (producer/options.py split_lora)."""
    from contract.params import LORA_SCALE_MAX
    from producer.options import split_lora

    if value is None:
        return None
    path, scale = split_lora(value)
    scale = 1.0 if scale is None else scale
    if not 0 <= scale <= LORA_SCALE_MAX:
        fail(f"--lora: its scale (after the last ':') must be a number from 0 to {LORA_SCALE_MAX:g}, got {scale:g}")
    if not path.endswith(".safetensors") or not Path(path).is_file():
        fail(f"--lora: {path[:200]!r} is not a .safetensors file here")
    return str(Path(path).resolve()), scale


def engine_build(
    model: Annotated[
        Optional[str], typer.Option(help="Diffusers model directory (default: PIXELMILL_MODEL, else the tiny model).")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="UNet precision: int8 (calibrated), fp8 (Hopper/Ada) or fp16.")
    ] = "int8",
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT the engines are built for (static).")] = "512x512",
    batch: Annotated[str, typer.Option(help="Images per request the engines accept, MIN-MAX.")] = "1-16",
    calib_prompts: Annotated[
        Optional[Path],
        typer.Option(
            help="Calibration prompts, one per line (int8/fp8; NVIDIA uses 512-1024 for SD1.5, 32-64 for SDXL)."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps during calibration: the ones you serve.")] = 30,
    guidance: Annotated[float, typer.Option(help="Guidance scale during calibration.")] = 7.5,
    quant_level: Annotated[float, typer.Option(help="INT8 linears: 1 none, 2 feed-forward, 2.5 + q/k/v, 3 all.")] = 2.5,
    alpha: Annotated[float, typer.Option(help="SmoothQuant alpha (NVIDIA: 1.0 SD1.5, 0.8 SDXL).")] = 1.0,
    lora: Annotated[
        Optional[str],
        typer.Option(
            metavar="PATH[:SCALE]",
            help="A brand LoRA (.safetensors) fused into the UNet before calibration and export, at SCALE (0 to 2, "
            "default 1): the engines serve jobs with exactly that LoRA and scale.",
        ),
    ] = None,
    onnx_only: Annotated[bool, typer.Option("--onnx-only", help="Stop after the ONNX export.")] = False,
    onnx_dir: Annotated[
        Optional[Path],
        typer.Option("--out", help="Directory for the ONNX files (default: beside the engines in the cache)."),
    ] = None,
) -> None:
    """Calibrate, export ONNX, build TensorRT engines and store them in PIXELMILL_ENGINE_CACHE.

    Without TensorRT or a GPU the build stops after the ONNX export and exits with code 3."""
    from worker.engine.build import build, parse_batches  # torch
    from worker.engine.cache import EngineCache
    from worker.engine.trt_build import TensorRTMissing

    settings = get_settings()
    try:
        width, height = parse_size(size)
        batch_min, batch_max = parse_batches(batch)
    except ValueError as exc:
        fail(str(exc))
    prompts = calibration_prompts(precision, calib_prompts)
    started = time.monotonic()
    try:
        result = build(
            model or settings.default_model,
            precision=precision,
            width=width,
            height=height,
            batch_min=batch_min,
            batch_max=batch_max,
            prompts=prompts,
            cache=EngineCache(settings.engine_cache_path),
            steps=steps,
            guidance=guidance,
            level=quant_level,
            alpha=alpha,
            onnx_only=onnx_only,
            work_dir=onnx_dir,
            lora=engine_lora(lora),
        )
    except TensorRTMissing as exc:
        fail(str(exc), 3)
    except ValueError as exc:
        fail(str(exc))
    took = time.monotonic() - started
    if result.manifest is None:
        out.print(f"ONNX ({precision}) written to {result.onnx_dir} in {took:.1f} s", highlight=False)
        return
    key = result.manifest.key
    out.print(
        f"engines {result.manifest.short_id} ({precision}, {size}, batch {batch}, {key.gpu}, "
        f"TensorRT {key.trt_version}) written to {result.final_dir} in {took:.1f} s",
        highlight=False,
    )


def calibration_prompts(precision: str, path: Path | None) -> list[str]:
    """The prompts an int8/fp8 build calibrates on (none for fp16); exit 2 without a file or with an empty one."""
    from worker.engine.build import read_prompts  # torch

    if precision not in ("int8", "fp8"):
        return []
    if path is None:
        fail(f"--precision {precision} needs --calib-prompts FILE (real prompts, one per line)")
    prompts = read_prompts(path)
    if not prompts:
        fail(f"{path} has no prompts")
    return prompts


def broker_start() -> None:
    """Start the embedded Redis (processes also start it on first use)."""
    out.print(EmbeddedRedis(get_settings().data_path).ensure_running())


def broker_stop() -> None:
    """Stop the embedded Redis; queued messages persist in its append-only file."""
    stopped = EmbeddedRedis(get_settings().data_path).stop()
    out.print("stopped" if stopped else "not running")


def broker_status() -> None:
    """Whether the embedded Redis answers on its socket; exits 1 when it does not (scripts can test it)."""
    broker = EmbeddedRedis(get_settings().data_path)
    running = broker.is_running()
    out.print(f"{broker.url}: {'running' if running else 'not running'}", highlight=False)
    if not running:
        raise typer.Exit(1)


def demo(
    catalogue: Annotated[
        Optional[Path],
        typer.Option(help="Catalogue (default: examples/scenes.csv, or catalogue.csv on the tiny model)."),
    ] = None,
    size: Annotated[str, typer.Option(help="Image size (the trained scene model's is 64x64).")] = "64x64",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 10,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 540,
) -> None:
    """From nothing: the trained scene model (or the tiny one), a worker, the sample catalogue, a report, stop."""
    # Before anything starts (a bad option must not leave a worker or a broker behind), as `submit` checks them.
    for name, problem in option_problems(Options(size=size, steps=steps)):
        raise typer.BadParameter(problem, param_hint=f"'--{name}'")
    if not timeout > 0:
        raise typer.BadParameter(f"must be greater than 0, got {timeout:g}", param_hint="'--timeout'")
    if catalogue is not None and not catalogue.is_file():
        raise typer.BadParameter(f"{catalogue} is not a file", param_hint="'--catalogue'")
    code = run_demo(
        get_settings(), catalogue=catalogue, size=size, steps=steps, timeout=timeout, console=out, progress=watch_job
    )
    raise typer.Exit(code)

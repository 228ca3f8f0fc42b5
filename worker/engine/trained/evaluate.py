"""Measure the trained pipeline and scorer on held-out captions, through the interfaces the worker uses.

The pipeline is loaded with `AutoPipelineForText2Image.from_pretrained` (as the torch engine loads a model) and
the scorer through the worker's `Judge` (as `PIXELMILL_CLIP_MODEL`), so the rates are those a job would see.

    python -m worker.engine.trained.evaluate models/scenes64 --count 200 --steps 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from . import measure, render


def load_pipeline(path: Path) -> Any:
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(path)  # float32, on the CPU
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_scorer(path: Path) -> Any:
    """The worker's Judge with only the CLIP score: `judge(image, captions)` -> one clip_score per caption."""
    from contract.checks import Checks
    from worker.image_checks import Judge

    judge = Judge(Checks(image_checker="none", clip_model=str(path)), device="cpu")

    def scores(image: Any, captions: list[str]) -> list[float]:
        verdicts = judge([image] * len(captions), captions)
        return [v.scores["clip_score"] for v in verdicts]

    return scores


def generate(
    pipe: Any, scenes: list[render.Scene], *, steps: int, guidance: float, seed: int, batch: int = 25
) -> list[Any]:
    """One picture per scene, picture i from generator seed `seed + i`."""
    images: list[Any] = []
    for start in range(0, len(scenes), batch):
        chunk = scenes[start : start + batch]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe(
            [s.caption for s in chunk],
            height=render.SIZE,
            width=render.SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
        )
        images.extend(out.images)
    return images


def evaluate(root: Path, *, count: int, steps: int, guidance: float, seed: int) -> dict[str, Any]:
    """Colour rate of generated pictures, and the scorer's top-1-of-5 on generated and on drawn pictures, against
    one-part distractors (`rank_rate_*`) and random ones (`rank_rate_*_random`)."""
    scenes = render.scenes(count, seed, held_out=True)
    pipe = load_pipeline(root / "pipeline")
    judge = load_scorer(root / "scorer")
    started = time.monotonic()
    images = generate(pipe, scenes, steps=steps, guidance=guidance, seed=seed)
    seconds = time.monotonic() - started
    drawn = [render.render(s, seed * 7919 + i) for i, s in enumerate(scenes)]
    return {
        "count": count,
        "steps": steps,
        "guidance": guidance,
        "generation_seconds": round(seconds, 1),
        "colour_rate": measure.colour_rate(images, scenes),
        "rank_rate_generated": measure.rank_rate(judge, images, scenes, seed=seed),
        "rank_rate_generated_random": measure.rank_rate(judge, images, scenes, seed=seed, one_part=False),
        "rank_rate_drawn": measure.rank_rate(judge, drawn, scenes, seed=seed),
        "rank_rate_drawn_random": measure.rank_rate(judge, drawn, scenes, seed=seed, one_part=False),
        "images": images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the folder holding pipeline/ and scorer/")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--sheet", type=Path, help="write the generated pictures here as one PNG")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = evaluate(args.root, count=args.count, steps=args.steps, guidance=args.guidance, seed=args.seed)
    images = result.pop("images")
    if args.sheet:
        from PIL import Image

        sheet = Image.new("RGB", (render.SIZE * 10, render.SIZE * ((len(images) + 9) // 10)))
        for i, image in enumerate(images):
            sheet.paste(image, ((i % 10) * render.SIZE, (i // 10) * render.SIZE))
        sheet.save(args.sheet)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Background mode against text mode at the same size, steps and batch on one engine (issue 25's "background
>= 0.9 x text"): the tiny model by default, the engine alone (no worker, no store), the worker's own placement and
composite included for background, alternating the two modes so both see the same machine load.

    PYTHONPATH=. python bench/photos.py [--model DIR] [--device cpu|cuda] [--size 64] [--steps 4] [--batch 8]
                                        [--repeats 7]

Prints one JSON object: the median seconds per batch of each mode and background's throughput relative to text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _photo(directory: Path, side: int) -> dict[str, str]:
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    ImageDraw.Draw(image).ellipse((side // 4, side // 5, side * 3 // 4, side * 4 // 5), fill=(200, 30, 30, 255))
    path = directory / "product.png"
    image.save(path)
    return {"image": str(path), "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    from worker import photos
    from worker.engine.interface import Request
    from worker.engine.tiny import build_tiny_pipeline
    from worker.engine.torch_engine import TorchEngine

    model = args.model or str(build_tiny_pipeline(directory / "tiny"))
    engine = TorchEngine(model, device=args.device)
    inputs = _photo(directory, args.size)
    n, side = args.batch, args.size
    prompts, negatives, seeds = ["a product on a marble table"] * n, [""] * n, list(range(n))

    def text() -> None:
        engine.generate(Request(prompts, negatives, seeds, side, side, args.steps, 7.5))

    def background() -> None:
        placed = [photos.place(inputs, side, side, mode="background") for _ in range(n)]
        request = Request(
            prompts,
            negatives,
            seeds,
            side,
            side,
            args.steps,
            7.5,
            mode="background",
            images=[p.canvas for p in placed],
            masks=[p.inpaint_mask() for p in placed],
        )
        made = engine.generate(request).images
        for image, p in zip(made, placed, strict=True):
            photos.composite(image, p)

    seconds: dict[str, list[float]] = {"text": [], "background": []}
    text()  # warm-up: the derived inpainting pipeline is built on first use
    background()
    for _ in range(args.repeats):
        for name, call in (("text", text), ("background", background)):
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "model": model if args.model else "tiny",
        "device": args.device,
        "size": side,
        "steps": args.steps,
        "batch": n,
        "repeats": args.repeats,
        "median_s": medians,
        "background_vs_text_throughput": medians["text"] / medians["background"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args, Path(tmp))))


if __name__ == "__main__":
    main()

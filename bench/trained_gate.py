"""Would a clip_score gate raise prompt match on the trained scene model? The offline form of
tests/test_trained_runs.py, over many settings at once (docs/benchmarks.md, models/scenes64/README.md).

For held-out captions, candidates n = 0 … N-1 (seed + n, as the worker's re-rolls) are generated with the worker's
engine and judged with its judge; the gate's choice is then re-enacted with `Checks` for thresholds at percentiles
of the first candidates' clip_score (re-roll: the first candidate that passes, else `Checks.best`) and for
best-of-N. Prompt match is `measure.background_colour`, independent of the scorer.

    python bench/trained_gate.py --pipeline models/scenes64/pipeline --steps 12 --guidance 2 --candidates 4
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from contract.checks import Checks, Threshold, Verdict, candidate_seed
from contract.settings import Settings
from worker.engine import Request, load_engine
from worker.engine.trained import measure, render
from worker.image_checks import load_judge

ROOT = Path(__file__).resolve().parents[1] / "models" / "scenes64"


def candidates(args: argparse.Namespace, scenes: list[render.Scene]) -> list[list[tuple[bool, Verdict]]]:
    """Per candidate n, per scene: (background colour right, verdict)."""
    engine = load_engine(str(args.pipeline), Settings(model=str(args.pipeline)))
    judge = load_judge(Checks(image_checker="none", clip_model=str(args.scorer)))
    prompts = [s.caption for s in scenes]
    out = []
    for n in range(args.candidates):
        images: list[Any] = []
        for start in range(0, len(scenes), 25):
            chunk = prompts[start : start + 25]
            seeds = [candidate_seed(args.seed + start + i, n) for i in range(len(chunk))]
            request = Request(chunk, [""] * len(chunk), seeds, 64, 64, args.steps, args.guidance)
            images.extend(engine.generate(request).images)
        verdicts = judge(images, prompts)
        out.append([(measure.background_colour(im) == s.background, v) for im, s, v in zip(images, scenes, verdicts)])
    return out


def kept(made: list[list[tuple[bool, Verdict]]], checks: Checks, i: int) -> bool:
    """Whether the candidate the gate keeps for scene i has the right colour."""
    tried = []
    for row in made[: checks.gate_n]:
        tried.append(row[i])
        if checks.gate_mode == "reroll" and checks.passes_all(row[i][1]):
            break
    return tried[checks.best([v for _, v in tried])][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipeline")
    parser.add_argument("--scorer", type=Path, default=ROOT / "scorer")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--scenes-seed", type=int, default=777)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenes = render.scenes(args.count, args.scenes_seed, held_out=True)
    made = candidates(args, scenes)
    first = sorted(v.scores["clip_score"] for _, v in made[0])
    report: dict[str, Any] = {
        "colour_first": sum(ok for ok, _ in made[0]) / args.count,
        "median_clip_score": round(statistics.median(first), 2),
    }
    for q in (0.1, 0.3, 0.5):
        gate = (Threshold("clip_score", ">=", first[int(q * args.count)]),)
        checks = Checks(image_checker="none", gate=gate, gate_mode="reroll", gate_n=args.candidates)
        report[f"colour_reroll_p{round(q * 100)}"] = sum(kept(made, checks, i) for i in range(args.count)) / args.count
    best = Checks(image_checker="none", gate_mode="best_of", gate_n=args.candidates, rank="clip_score")
    report["colour_best_of"] = sum(kept(made, best, i) for i in range(args.count)) / args.count
    print(json.dumps({**{k: str(v) for k, v in vars(args).items()}, **report}, indent=1))


if __name__ == "__main__":
    main()

"""A deliberately degraded copy of the scene pipeline, for checking that `pixelmill drift` notices a bad model.

The copy is the trained pipeline with its UNet's weights moved a fraction `undone` of the way back to a fresh
random initialisation of the same architecture (seeded): a stand-in for a checkpoint from earlier in training,
made in a second instead of re-running the training (none of the training's intermediate checkpoints is kept).
It is not an early checkpoint: an early one has learnt the coarse things first, this one has every weight
blurred alike. Everything else (autoencoder, text encoder, tokenizer, scheduler) is the trained model's.

    python -m worker.engine.trained.degrade models/scenes64/pipeline /tmp/degraded --undone 0.2
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def degraded_pipeline(source: Path, out: Path, *, undone: float, seed: int = 0) -> Path:
    """Write the pipeline at `source` to `out` with its UNet `undone` (0: as trained, 1: untrained) of the way
    back to a fresh initialisation from `seed`; returns `out`."""
    from diffusers import UNet2DConditionModel

    if not 0.0 <= undone <= 1.0:
        raise ValueError(f"undone must be between 0 and 1, not {undone}")
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("unet"))
    unet = UNet2DConditionModel.from_pretrained(source / "unet")
    state = unet.state_dict()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = UNet2DConditionModel.from_config(unet.config).state_dict()
    unet.load_state_dict({name: torch.lerp(value, fresh[name], undone) for name, value in state.items()})
    unet.save_pretrained(out / "unet")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the trained pipeline (models/scenes64/pipeline)")
    parser.add_argument("out", type=Path, help="a new folder for the degraded copy")
    parser.add_argument("--undone", type=float, default=0.2, help="0: as trained, 1: an untrained UNet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(degraded_pipeline(args.source, args.out, undone=args.undone, seed=args.seed))


if __name__ == "__main__":
    main()

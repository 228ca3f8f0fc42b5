"""INT8 ONNX of the inpainting UNet against its float32 torch UNet on CPU (issue 25's "relative L2 < 0.1"): the
recipe of `pixelmill engine build` (worker/engine/calibrate.py: modelopt INT8 + SmoothQuant, calibrated through the
inpainting pipeline on product photos), the Q/DQ ONNX export, and onnxruntime's CPU provider, on fresh random inputs
(other seeds than calibration) whose mask channel is binary. Also the float (unquantised) export's error.

    PYTHONPATH=. python bench/inpaint_int8.py [--model DIR] [--prompts 8] [--steps 4] [--batches 1,3]

Without --model, the tiny inpainting model (`pixelmill model tiny-inpaint`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def rel_l2(model: Any, session: Any, spec: Any, batch: int, seed: int) -> float:
    import numpy as np
    import torch

    inputs = spec.random_inputs(batch, generator=torch.Generator().manual_seed(seed))
    inputs["sample"][:, 4] = (inputs["sample"][:, 4] > 0).float()  # the mask channel
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = model(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample.numpy()
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from worker.engine.calibrate import quantise
    from worker.engine.onnx_export import UNetSpec, export_unet
    from worker.engine.tiny import build_tiny_inpaint_pipeline
    from worker.engine.torch_engine import TorchEngine

    model = args.model or str(build_tiny_inpaint_pipeline(directory / "inpaint"))
    pipe: Any = TorchEngine._load(model, torch.float32)  # as `engine build` loads it
    pipe.set_progress_bar_config(disable=True)
    reference = copy.deepcopy(pipe.unet).eval()
    spec = UNetSpec.of(pipe.unet, args.size, args.size)
    float_path = export_unet(reference, spec, directory / "float.onnx")
    prompts = [p for p in Path("tests/data/benign_prompts.txt").read_text().splitlines() if p.strip()][: args.prompts]
    started = time.perf_counter()
    quantise(pipe, prompts, steps=args.steps, width=args.size, height=args.size, batch=4)
    calibration = time.perf_counter() - started
    path = export_unet(pipe.unet, spec, directory / "unet.onnx")
    cpu = ["CPUExecutionProvider"]
    int8, fp32 = ort.InferenceSession(str(path), providers=cpu), ort.InferenceSession(str(float_path), providers=cpu)
    batches = [int(b) for b in args.batches.split(",")]
    return {
        "model": "tiny-inpaint" if not args.model else args.model,
        "unet_in_channels": spec.latent_channels,
        "calibration": {"prompts": len(prompts), "steps": args.steps, "seconds": round(calibration, 1)},
        "int8_rel_l2": {b: round(rel_l2(reference, int8, spec, b, 1000 + b), 4) for b in batches},
        "float_export_rel_l2": {b: float(f"{rel_l2(reference, fp32, spec, b, 2000 + b):.2e}") for b in batches},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", default="1,3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(run(args, Path(directory)), indent=2))


if __name__ == "__main__":
    main()

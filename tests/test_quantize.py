"""NVIDIA's INT8 recipe up to the TensorRT build, on the tiny model on CPU: modelopt calibration through the real
pipeline and scheduler, Q/DQ ONNX export, and that graph run by onnxruntime against the float32 torch UNet.

Bound: relative L2 error of the INT8 Q/DQ graph vs the float32 UNet below 0.1, on fresh random inputs (other
seeds than calibration). Measured on this tiny random-weight UNet: 0.043 (batch 1) and 0.049 (batch 3); the
fake-quantised torch UNet alone is at 0.041-0.048, so almost all of it is INT8 rounding, not the export.
A float (non-quantised) export of the same UNet agrees to about 1e-6, asserted below 1e-4.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx is in the dev extra")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
pytest.importorskip("modelopt.torch.quantization", reason="nvidia-modelopt is in the dev extra")

from worker.engine.calibrate import quantise  # noqa: E402
from worker.engine.onnx_export import UNetSpec, export_unet  # noqa: E402
from worker.engine.recipe import is_sensitive, quantised_layers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INT8_BOUND = 0.1
FLOAT_BOUND = 1e-4
# (float32 reference UNet, calibrated pipeline, exported Q/DQ ONNX path); a pipeline's components (unet, vae...)
# are registered at run time, so diffusers' class does not declare them.
Quantised = tuple[torch.nn.Module, Any, Path]
PROMPTS = [line for line in (REPO / "tests/data/benign_prompts.txt").read_text().splitlines() if line.strip()][:8]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def quantised(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Quantised:
    """(float32 reference UNet, calibrated pipeline, exported Q/DQ ONNX path)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    reference = copy.deepcopy(pipe.unet)
    quantise(pipe, PROMPTS, steps=4, width=64, height=64, batch=4)
    path = export_unet(pipe.unet, UNetSpec.of(pipe.unet, 64, 64), tmp_path_factory.mktemp("onnx") / "unet.onnx")
    return reference, pipe, path


def unet_outputs(
    path: Path, unet: torch.nn.Module, spec: UNetSpec, batch: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    inputs = spec.random_inputs(batch, generator=torch.Generator().manual_seed(seed))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # like torch here (tests/conftest.py): xdist's processes are the parallelism
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample.numpy()
    return got, want


def test_recipe_keeps_sensitive_layers_in_high_precision(quantised: Quantised) -> None:
    from modelopt.torch.quantization.nn import TensorQuantizer

    _, pipe, _ = quantised
    enabled = {
        name.rsplit(".", 1)[0]
        for name, m in pipe.unet.named_modules()
        if isinstance(m, TensorQuantizer) and m.is_enabled
    }
    expected = set(quantised_layers(pipe.unet))
    assert enabled == expected
    assert any(".ff.net." in n for n in enabled) and any(n.endswith(".to_q") for n in enabled)
    for fragment in ("conv_in", "conv_out", "time_embedding", "time_emb_proj", "conv_shortcut", "proj_in", "proj_out"):
        present = [n for n, _ in pipe.unet.named_modules() if fragment in n]
        assert present, f"the tiny UNet has no {fragment}: the check would be vacuous"
        assert not any(fragment in n for n in enabled), fragment
    assert is_sensitive("down_blocks.1.resnets.0.conv_shortcut") and not is_sensitive("down_blocks.1.resnets.0.conv1")


def test_conv_activation_ranges_come_from_the_step_calibrator(quantised: Quantised) -> None:
    _, pipe, _ = quantised
    conv = pipe.unet.down_blocks[0].resnets[0].conv1
    amax = conv.input_quantizer.amax
    assert amax is not None and amax.numel() == 1 and float(amax) > 0  # per tensor, calibrated
    assert conv.weight_quantizer.amax.numel() == conv.out_channels  # per output channel


def test_onnx_graph_has_qdq_only_on_quantised_layers(quantised: Quantised) -> None:
    _, pipe, path = quantised
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    producer = {out: node for node in graph.node for out in node.output}
    fed_by_dq = [
        n.name
        for n in graph.node
        if n.op_type in ("Conv", "MatMul", "Gemm")
        and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)
    ]
    assert len(fed_by_dq) == len(quantised_layers(pipe.unet))
    for name in fed_by_dq:
        assert not is_sensitive(name.replace("/", ".").strip(".")), name


@pytest.mark.parametrize("batch", [1, 3])
def test_int8_onnx_matches_float_unet_within_bound(quantised: Quantised, batch: int) -> None:
    reference, pipe, path = quantised
    got, want = unet_outputs(path, reference, UNetSpec.of(pipe.unet, 64, 64), batch, seed=1000 + batch)
    err = rel_err(got, want)
    assert err < INT8_BOUND, f"relative L2 error {err:.4f}"
    assert err > 1e-3, "no quantisation error at all: the Q/DQ nodes are not doing anything"


def test_float_export_matches_torch(tiny_model: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet").eval()
    spec = UNetSpec.of(unet, 64, 64)
    path = export_unet(unet, spec, tmp_path / "unet.onnx")
    got, want = unet_outputs(path, unet, spec, 2, seed=7)
    assert rel_err(got, want) < FLOAT_BOUND


@pytest.mark.minute(1)
def test_engine_build_cli_exports_then_stops_without_tensorrt(tiny_model: Path, tmp_path: Path) -> None:
    """`pixelmill engine build` runs calibration and the ONNX export here and exits 3 at the TensorRT step."""
    if _tensorrt_imports():
        pytest.skip("TensorRT imports here: the build would not stop after the export")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:4]))
    env = {**os.environ, "PIXELMILL_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelmill",
            "engine",
            "build",
            "--model",
            str(tiny_model),
            "--size",
            "64x64",
            "--batch",
            "1-2",
            "--steps",
            "3",
            "--calib-prompts",
            str(prompts),
            "--out",
            str(tmp_path / "onnx"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    assert "TensorRT" in proc.stderr
    names = {p.name for p in (tmp_path / "onnx").iterdir()}
    assert {"unet.onnx", "text_encoder.onnx", "vae_decoder.onnx", "export.json"} <= names
    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / "unet.onnx")).graph.node}
    assert "QuantizeLinear" in ops


def _tensorrt_imports() -> bool:
    from worker.engine.select import tensorrt_version

    return tensorrt_version() is not None


def test_int8_onnx_of_the_inpainting_unet_matches_its_float_unet_within_bound(tmp_path: Path) -> None:
    """The 9-channel inpainting UNet (background mode) through the same recipe: loaded as `engine build` loads it,
    calibrated through the inpainting pipeline on product photos, exported with Q/DQ, run by onnxruntime against
    the float32 UNet on fresh inputs whose mask channel is binary, as the pipeline feeds it."""
    from worker.engine.tiny import build_tiny_inpaint_pipeline
    from worker.engine.torch_engine import TorchEngine

    model = build_tiny_inpaint_pipeline(tmp_path / "inpaint", seed=0)
    pipe = TorchEngine._load(str(model), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    reference = copy.deepcopy(pipe.unet)
    quantise(pipe, PROMPTS[:4], steps=3, width=64, height=64, batch=4)
    spec = UNetSpec.of(pipe.unet, 64, 64)
    assert spec.latent_channels == 9
    path = export_unet(pipe.unet, spec, tmp_path / "unet.onnx")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    inputs = spec.random_inputs(2, generator=torch.Generator().manual_seed(2024))
    inputs["sample"][:, 4] = (inputs["sample"][:, 4] > 0).float()  # the mask channel: 0 kept, 1 repainted
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = reference(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample.numpy()
    err = rel_err(got, want)
    assert err < INT8_BOUND, f"relative L2 error {err:.4f}"
    assert err > 1e-3, "no quantisation error at all: the Q/DQ nodes are not doing anything"

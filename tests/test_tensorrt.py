"""TensorRT build and runtime on the tiny model. They need TensorRT 10 and a CUDA GPU, so they skip in this
project's CI (TensorRT cannot be installed there) and run on a GPU host with `pixelmill[worker,gpu,dev]` plus
TensorRT: build INT8 and FP16 engines into a fresh cache, load them through `--engine auto`, compare with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be in this workplace's CI)")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("TensorRT tests need a CUDA GPU", allow_module_level=True)

from contract.settings import Settings  # noqa: E402
from worker.engine import Request  # noqa: E402
from worker.engine.build import build  # noqa: E402
from worker.engine.cache import EngineCache  # noqa: E402
from worker.engine.select import open_engine  # noqa: E402
from worker.engine.torch_engine import TorchEngine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [line for line in (REPO / "tests/data/benign_prompts.txt").read_text().splitlines() if line.strip()][:8]


def request(n: int, size: int = 64) -> Request:
    return Request(
        prompts=PROMPTS[:n], negatives=[""] * n, seeds=list(range(n)), width=size, height=size, steps=4, guidance=7.5
    )


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_then_auto_selects_tensorrt_and_matches_torch(tiny_model: Path, tmp_path: Path, precision: str) -> None:
    cache = EngineCache(tmp_path / "engines")
    result = build(
        str(tiny_model),
        precision=precision,
        width=64,
        height=64,
        batch_min=1,
        batch_max=4,
        prompts=PROMPTS if precision == "int8" else [],
        cache=cache,
        steps=4,
        device="cuda",
    )
    assert result.manifest is not None and cache.lookup(result.manifest.key) == result.manifest
    assert {"unet", "text_encoder", "vae_decoder"} <= set(result.manifest.components)
    settings = Settings(data_dir=tmp_path, engine="auto", engine_cache=cache.root)
    engine = open_engine(str(tiny_model), settings, device="cuda")
    assert engine.engine_id.startswith(f"trt-{precision}-sm")
    got = engine.generate(request(3))
    assert got.engine_id is None and len(got.images) == 3
    want = TorchEngine(str(tiny_model), device="cuda").generate(request(3))
    diff = np.mean(
        [np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() for a, b in zip(got.images, want.images)]
    )
    assert diff < (4 if precision == "fp16" else 24), diff
    # A shape no build covers goes to torch, and says so.
    other = engine.generate(request(1, size=96))
    assert other.engine_id is not None and other.engine_id.startswith("torch-")

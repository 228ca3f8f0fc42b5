"""Engine tests on the project's own tiny Stable Diffusion model (CPU, no downloads, a few seconds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image as PILImage

from worker.engine import Request, load_engine
from worker.engine.tiny import build_tiny_pipeline
from worker.engine.torch_engine import TorchEngine

REPO = Path(__file__).resolve().parents[1]
PROMPT = "studio photo of a red ceramic mug, white background"


def make_request(
    n: int = 4,
    *,
    prompts: list[str] | None = None,
    negatives: list[str] | None = None,
    seeds: list[int] | None = None,
    width: int = 64,
    height: int = 64,
    steps: int = 3,
    guidance: float = 7.5,
) -> Request:
    return Request(
        prompts=prompts if prompts is not None else [f"{PROMPT}, variant {i}" for i in range(n)],
        negatives=negatives if negatives is not None else [""] * n,
        seeds=seeds if seeds is not None else [1000 + i for i in range(n)],
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
    )


def pixels(image: PILImage.Image) -> npt.NDArray[np.int16]:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> TorchEngine:
    loaded = load_engine(str(tiny_model))
    assert isinstance(loaded, TorchEngine)
    return loaded


def test_importing_engine_package_does_not_import_torch() -> None:
    """The Celery parent imports worker.engine before forking; torch there would risk CUDA init pre-fork."""
    code = "import sys, worker.engine; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_tiny_build_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    again = build_tiny_pipeline(tmp_path / "again", seed=0)
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    weights = sorted(p.relative_to(tiny_model) for p in tiny_model.rglob("*.safetensors"))
    assert len(weights) == 3  # unet, vae, text_encoder
    for rel in weights:
        assert (tiny_model / rel).read_bytes() == (again / rel).read_bytes(), rel
        assert (tiny_model / rel).read_bytes() != (other / rel).read_bytes(), rel


def test_tiny_tokenizer_and_text_encoder_agree(tiny_model: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    config = CLIPTextConfig.from_pretrained(tiny_model / "text_encoder")
    assert len(tokenizer) == config.vocab_size
    assert tokenizer.model_max_length == config.max_position_embeddings == 77
    ids = tokenizer(PROMPT).input_ids
    assert 5 < len(ids) < len(PROMPT)  # real subwords: more than a handful, fewer than characters
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ,", ",") == PROMPT


def test_tiny_model_loads_with_auto_pipeline(tiny_model: Path) -> None:
    from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline

    pipe = AutoPipelineForText2Image.from_pretrained(tiny_model)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.safety_checker is None  # set at run time by register_modules


@pytest.mark.parametrize(("n", "width", "height"), [(4, 64, 64), (2, 64, 96)])
def test_generate_returns_rgb_images_of_requested_size(
    engine: TorchEngine, tiny_model: Path, n: int, width: int, height: int
) -> None:
    result = engine.generate(make_request(n, width=width, height=height))
    assert engine.engine_id == "torch-fp32-cpu"
    assert engine.model == str(tiny_model)
    assert len(result.images) == n
    assert all(image.mode == "RGB" and image.size == (width, height) for image in result.images)
    assert set(result.timings) == {"text", "denoise", "decode", "total"}
    assert all(t >= 0 for t in result.timings.values())
    assert result.timings["total"] >= result.timings["denoise"]


def test_same_seed_same_image_different_seed_different_image(engine: TorchEngine) -> None:
    request = make_request(3, prompts=[PROMPT] * 3, seeds=[7, 7, 8])
    first, twin, other = map(pixels, engine.generate(request).images)
    assert np.array_equal(first, twin)
    assert not np.array_equal(first, other)
    rerun = pixels(engine.generate(request).images[0])
    assert np.array_equal(first, rerun)


def test_item_does_not_depend_on_batch_neighbours(engine: TorchEngine) -> None:
    """An item generated alone and at position 2 of a batch of 4 (other prompts, negatives and seeds)
    gives the same image within a max absolute pixel difference of 2/255, allowing for float
    reassociation in batched CPU/GPU kernels.
    """
    alone = engine.generate(make_request(1, prompts=[PROMPT], negatives=["blurry"], seeds=[2**63 - 1]))
    batch = engine.generate(
        make_request(
            4,
            prompts=["leather wallet", "blue cotton t-shirt", PROMPT, "glass teapot"],
            negatives=["", "low quality", "blurry", "text"],
            seeds=[1, 2, 2**63 - 1, 3],
        )
    )
    diff = np.abs(pixels(alone.images[0]) - pixels(batch.images[2])).max()
    assert diff <= 2, f"max pixel difference {diff}"


def test_split_stages_match_one_plain_pipeline_call(engine: TorchEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timed text/denoise/decode split must produce what one plain diffusers call produces
    (the path non-SD pipelines such as SDXL take)."""
    request = make_request(2, negatives=["", "blurry"])
    split = engine.generate(request)
    monkeypatch.setattr(engine, "split_stages", False)
    whole = engine.generate(request)
    assert set(whole.timings) == {"total"}
    for a, b in zip(split.images, whole.images):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2


@pytest.mark.parametrize(
    "bad",
    [
        dict(n=0),
        dict(negatives=["", ""]),
        dict(seeds=[1, 2, 3]),
        dict(seeds=[1, 2, 3, -1]),
        dict(seeds=[1, 2, 3, 2**63]),
        dict(width=60),
        dict(height=0),
        dict(steps=0),
        dict(guidance=float("nan")),
    ],
)
def test_invalid_requests_raise_value_error(engine: TorchEngine, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        engine.generate(make_request(**{"n": 4, **bad}))


def test_load_engine_caches_one_model_per_process(engine: TorchEngine, tiny_model: Path, tmp_path: Path) -> None:
    assert load_engine(str(tiny_model)) is engine
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    replacement = load_engine(str(copy))
    assert isinstance(replacement, TorchEngine) and replacement is not engine
    assert load_engine(str(copy)) is replacement
    assert load_engine(str(tiny_model)) is not engine  # the first was dropped, so it loads afresh


def test_torch_engine_options_on_cpu(engine: TorchEngine, tiny_model: Path) -> None:
    """Fused QKV is always applied; torchao INT8 (Linear layers) runs on CPU too and shows in the engine id;
    FP8 needs a Hopper/Ada GPU and is refused here with the reason; CPU stays fp32 whatever the dtype setting."""
    fused = {type(p).__name__ for p in engine.pipe.unet.attn_processors.values()}
    assert all(name.startswith("Fused") for name in fused), fused
    with pytest.raises(ValueError, match="fp8"):
        TorchEngine(str(tiny_model), device="cpu", quant="fp8")
    int8 = TorchEngine(str(tiny_model), device="cpu", quant="int8", dtype="bf16")
    assert int8.engine_id == "torch-fp32-cpu+int8"
    request = make_request(2)
    quantised, plain = int8.generate(request), engine.generate(request)
    assert [im.size for im in quantised.images] == [(64, 64)] * 2
    # INT8 linears change the images a little, not completely (same seeds, same prompts).
    diff = np.mean([np.abs(pixels(a) - pixels(b)).mean() for a, b in zip(quantised.images, plain.images)])
    assert 0 < diff < 32, diff


def test_load_engine_follows_the_engine_setting(tiny_model: Path, tmp_path: Path) -> None:
    from contract.settings import Settings
    from worker.engine.select import EngineUnavailable, tensorrt_version

    if tensorrt_version() is not None:
        pytest.skip("TensorRT imports here")
    copy = shutil.copytree(tiny_model, tmp_path / "model")
    with pytest.raises(EngineUnavailable, match="TensorRT does not import"):
        load_engine(str(copy), Settings(data_dir=tmp_path, engine="tensorrt"))
    assert load_engine(str(copy), Settings(data_dir=tmp_path, engine="auto")).engine_id == "torch-fp32-cpu"

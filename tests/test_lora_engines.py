"""Brand LoRAs on the optimised engines (issue 25): the engine cache key holds the LoRA's sha256 and scale; a
quantised (or compiled) torch UNet takes the LoRA fused into a copy of it before quantising, one per (LoRA, scale);
the TensorRT build fuses it before calibration and the ONNX export, checked here on CPU up to the ONNX graph."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from worker.engine.cache import EngineKey, Manifest

KEY = EngineKey("ab" * 32, "int8", 512, 512, 1, 16, "sm90", "10.13.0")
LORA_SHA = "cd" * 32


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA for the tiny models, as `pixelmill model tiny-lora` writes it."""
    from worker.engine.tiny import build_tiny_lora

    return build_tiny_lora(tmp_path_factory.mktemp("lora") / "brand.safetensors", seed=1)


def test_the_engine_key_holds_the_loras_sha256_and_scale() -> None:
    import hashlib

    fields = {k: v for k, v in asdict(KEY).items() if not k.startswith("lora")}
    before = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
    assert KEY.digest() == before  # a build without a LoRA keeps the directory it had before LoRAs
    branded = replace(KEY, lora_sha256=LORA_SHA, lora_scale=1.0)
    digests = {KEY.digest(), branded.digest(), replace(branded, lora_scale=0.5).digest()}
    assert len(digests) == 3 and replace(branded, lora_sha256="ef" * 32).digest() not in digests
    assert KEY.serves(512, 512, 4, None) and not KEY.serves(512, 512, 4, (LORA_SHA, 1.0))
    assert branded.serves(512, 512, 4, (LORA_SHA, 1)) and not branded.serves(512, 512, 4, None)
    assert not branded.serves(512, 512, 4, (LORA_SHA, 0.5)) and not branded.serves(512, 512, 4, ("ef" * 32, 1.0))
    manifest = Manifest(key=branded, model="/m", components={})
    assert Manifest.from_json(manifest.to_json()).key == branded
    old = json.loads(Manifest(key=KEY, model="/m", components={}).to_json())
    for name in ("lora_sha256", "lora_scale"):
        del old["key"][name]  # a manifest written before LoRAs reads as a build without one
    assert Manifest.from_json(json.dumps(old)).key == KEY


def _initializers(path: Path) -> dict[str, bytes]:
    onnx = pytest.importorskip("onnx", reason="onnx is in the dev extra")
    graph = onnx.load(str(path)).graph
    return {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in graph.initializer}


def test_the_exported_unet_has_the_lora_fused_and_at_scale_0_is_the_base(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    from diffusers import UNet2DConditionModel

    from worker.engine.lora import LoraChanged, file_sha256, fused_unet
    from worker.engine.onnx_export import UNetSpec, export_unet

    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet").eval()
    spec, sha = UNetSpec.of(unet, 64, 64), file_sha256(str(lora))
    untouched = {name: p.clone() for name, p in unet.named_parameters()}
    exported = {
        name: _initializers(export_unet(model, spec, tmp_path / f"{name}.onnx"))
        for name, model in (
            ("base", unet),
            ("scale-1", fused_unet(unet, str(lora), sha, 1.0)),
            ("scale-0", fused_unet(unet, str(lora), sha, 0.0)),
        )
    }
    assert all(torch.equal(p, untouched[name]) for name, p in unet.named_parameters())  # fused into copies only
    assert exported["scale-0"] == exported["base"]
    assert exported["scale-1"].keys() == exported["base"].keys()  # the same graph, peft's layers gone again
    changed = [name for name in exported["base"] if exported["scale-1"][name] != exported["base"][name]]
    assert changed and len(changed) < len(exported["base"])  # the LoRA's layers, and only some
    with pytest.raises(LoraChanged, match="changed since it was checked at submit"):
        fused_unet(unet, str(lora), "0" * 64, 1.0)


def test_a_quantised_engine_fuses_the_lora_into_a_copy_per_lora_and_scale(tiny_model: Path, lora: Path) -> None:
    """PIXELMILL_TORCH_QUANT=int8 (torchao, on CPU here): LoRA jobs no longer refused. Scale 0 is the quantised
    base model's image exactly, scale 1 another; a fused UNet is built once per (sha256, scale) and kept."""
    from worker.engine.interface import Request
    from worker.engine.lora import FusedLoras, file_sha256
    from worker.engine.torch_engine import TorchEngine

    engine = TorchEngine(str(tiny_model), device="cpu", quant="int8")
    assert isinstance(engine.loras, FusedLoras) and engine.engine_id.endswith("+int8")
    sha = file_sha256(str(lora))

    def make(scale: float | None) -> Any:
        if scale is None:
            request = Request(["a red mug"], [""], [7], 64, 64, 2, 5.0)
        else:
            request = Request(
                ["a red mug"], [""], [7], 64, 64, 2, 5.0, lora=str(lora), lora_sha256=sha, lora_scale=scale
            )
        return np.asarray(engine.generate(request).images[0])

    base = make(None)
    assert np.array_equal(make(0.0), base) and engine.loras.loads == 0
    at_one = make(1.0)
    assert not np.array_equal(at_one, base)
    assert np.array_equal(make(1.0), at_one) and engine.loras.loads == 1  # kept: not fused again
    assert not np.array_equal(make(0.5), at_one) and engine.loras.loads == 2  # another scale, another copy
    assert np.array_equal(make(None), base)  # the engine's own quantised UNet back, as it was


def test_engine_build_fuses_the_lora_before_the_export_and_records_it(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    """`pixelmill engine build --lora PATH:SCALE` up to the ONNX export (no TensorRT here): the UNet exported is the
    fused one, and what was fused is written beside it."""
    from worker.engine.build import build
    from worker.engine.cache import EngineCache
    from worker.engine.lora import file_sha256

    common: dict[str, Any] = dict(
        precision="fp16", width=64, height=64, batch_min=1, batch_max=1, prompts=[], onnx_only=True, device="cpu"
    )
    cache = EngineCache(tmp_path / "cache")
    branded = build(str(tiny_model), cache=cache, lora=(str(lora), 0.8), **common)
    plain = build(str(tiny_model), cache=cache, **common)
    assert branded.onnx_dir != plain.onnx_dir and branded.onnx_dir.name.endswith("-0.8")
    recorded = json.loads((branded.onnx_dir / "export.json").read_text())["lora"]
    assert recorded == {"file": str(lora), "sha256": file_sha256(str(lora)), "scale": 0.8}
    assert json.loads((plain.onnx_dir / "export.json").read_text())["lora"] is None
    assert _initializers(branded.onnx_dir / "unet.onnx") != _initializers(plain.onnx_dir / "unet.onnx")
    assert _initializers(branded.onnx_dir / "text_encoder.onnx") == _initializers(plain.onnx_dir / "text_encoder.onnx")


@pytest.mark.parametrize(
    ("value", "words"),
    [("{lora}:3", "from 0 to 2, got 3"), ("{missing}:0.5", "is not a .safetensors file here")],
    ids=["scale-over-2", "missing"],
)
def test_engine_build_refuses_a_bad_lora_before_building(lora: Path, tmp_path: Path, value: str, words: str) -> None:
    from typer.testing import CliRunner

    from pixelmill.cli import app

    given = value.replace("{lora}", str(lora)).replace("{missing}", str(tmp_path / "nope.safetensors"))
    result = CliRunner().invoke(app, ["engine", "build", "--precision", "fp16", "--lora", given])
    assert result.exit_code == 2 and words in result.output, result.output


def test_a_lora_that_changes_the_text_encoder_is_not_fused_into_the_unet_alone(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from worker.engine.lora import LoraUnfusable, file_sha256, fused_unet

    path = tmp_path / "both.safetensors"
    save_file({"unet.a.lora_A.weight": torch.zeros(2), "text_encoder.b.lora_A.weight": torch.zeros(2)}, str(path))
    with pytest.raises(LoraUnfusable, match="changes more than the UNet"):
        fused_unet(None, str(path), file_sha256(str(path)), 1.0)


def test_a_tensorrt_worker_runs_a_lora_job_only_on_a_build_with_that_lora_and_scale() -> None:
    """The runtime's choice of build (TensorRT itself is not needed to make it): the base build for requests
    without a LoRA or at scale 0, the branded one for its own LoRA and scale, none (torch) for any other."""
    from worker.engine.interface import Request
    from worker.engine.trt_runtime import TensorRTEngine

    base = Manifest(key=replace(KEY, width=64, height=64), model="/m", components={})
    branded = Manifest(key=replace(base.key, lora_sha256=LORA_SHA, lora_scale=1.0), model="/m", components={})
    engine = TensorRTEngine.__new__(TensorRTEngine)  # no TensorRT here: only the choice, not the engines
    engine.builds = [base, branded]

    def chosen(sha: str | None, scale: float = 1.0) -> Manifest | None:
        lora = {"lora": "/l/brand.safetensors", "lora_sha256": sha, "lora_scale": scale} if sha else {}
        return engine._build_for(Request(["p"], [""], [1], 64, 64, 2, 5.0, **lora))  # type: ignore[arg-type]

    assert chosen(None) is base and chosen(LORA_SHA, 0.0) is base
    assert chosen(LORA_SHA, 1.0) is branded
    assert chosen(LORA_SHA, 0.5) is None and chosen("ef" * 32) is None

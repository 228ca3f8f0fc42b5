"""Engine cache manifests and engine selection (auto/torch/tensorrt) on a host without TensorRT or a GPU."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import Env, finished, write_catalogue
from contract.schema import Item
from contract.settings import Settings
from worker.engine.cache import EngineCache, EngineKey, Manifest, model_fingerprint
from worker.engine.select import EngineUnavailable, choose, tensorrt_version

KEY = EngineKey(
    model_hash="ab" * 32,
    precision="int8",
    width=512,
    height=512,
    batch_min=1,
    batch_max=16,
    gpu="sm90",
    trt_version="10.13.0",
)


def manifest(key: EngineKey = KEY) -> Manifest:
    return Manifest(
        key=key,
        model="/models/sd15",
        components={"unet": {"plan": "unet.plan", "precision": "int8"}},
        calibration_hash="cd" * 32,
        calibration_prompts=512,
        calibration_steps=30,
        quant_level=2.5,
        created="2026-11-25T00:00:00+00:00",
        tool_versions={"tensorrt": "10.13.0"},
    )


def commit(cache: EngineCache, m: Manifest) -> Path:
    staging = cache.staging(m.key)
    (staging / "unet.plan").write_bytes(b"plan")
    return cache.commit(staging, m)


def test_manifest_json_round_trip() -> None:
    m = manifest()
    again = Manifest.from_json(m.to_json())
    assert again == m and again.key == KEY and again.short_id == m.short_id
    data = json.loads(m.to_json())
    data["format"] = 99
    with pytest.raises(ValueError, match="format"):
        Manifest.from_json(json.dumps(data))


def test_cache_lookup_matches_only_the_same_key(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    final = commit(cache, manifest())
    assert (final / "manifest.json").is_file() and (final / "unet.plan").read_bytes() == b"plan"
    assert cache.lookup(KEY) == manifest()
    for change in (
        dict(model_hash="ef" * 32),
        dict(gpu="sm89"),
        dict(trt_version="10.14.0"),
        dict(precision="fp8"),
        dict(width=768),
        dict(batch_max=8),
    ):
        assert cache.lookup(replace(KEY, **change)) is None, change
    assert cache.find(KEY.model_hash, gpu="sm90", trt_version="10.13.0") == [manifest()]
    assert cache.find(KEY.model_hash, gpu="sm80", trt_version="10.13.0") == []
    assert cache.find(KEY.model_hash, gpu="sm90", trt_version="10.9.0") == []
    assert KEY.covers(512, 512, 16) and not KEY.covers(512, 512, 17) and not KEY.covers(768, 512, 1)


def test_concurrent_builds_of_one_key_leave_one_complete_build(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    results: list[Path] = []
    stagings = [cache.staging(KEY) for _ in range(4)]
    for s in stagings:
        (s / "unet.plan").write_bytes(b"plan")
    threads = [threading.Thread(target=lambda s=s: results.append(cache.commit(s, manifest()))) for s in stagings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert cache.lookup(KEY) == manifest()
    leftovers = [p.name for p in cache.directory(KEY).parent.iterdir() if p.name.startswith(".build-")]
    assert leftovers == []


def test_corrupt_manifest_counts_as_absent(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    final = commit(cache, manifest())
    (final / "manifest.json").write_text("{not json")
    assert cache.lookup(KEY) is None
    assert cache.find(KEY.model_hash, gpu="sm90", trt_version="10.13.0") == []


def test_model_fingerprint_follows_weights_and_config(tiny_model: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model))
    config = copy / "unet" / "config.json"
    config.write_text(config.read_text().replace('"sample_size": 32', '"sample_size": 33'))
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_model))
    weights = next((tmp_path / "copy").rglob("*.safetensors"))
    shutil.copytree(tiny_model, tmp_path / "copy2")
    w2 = tmp_path / "copy2" / weights.relative_to(copy)
    data = bytearray(w2.read_bytes())
    data[-1] ^= 1
    w2.write_bytes(bytes(data))
    assert model_fingerprint(str(tmp_path / "copy2")) != model_fingerprint(str(tiny_model))
    assert model_fingerprint("org/model") != model_fingerprint("org/other")


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT imports here")
def test_selection_without_tensorrt(tiny_model: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert choose(str(tiny_model), "torch", cache, "cpu").kind == "torch"
    auto = choose(str(tiny_model), "auto", cache, "cpu")
    assert auto.kind == "torch" and "TensorRT does not import" in auto.reason
    with pytest.raises(EngineUnavailable, match="PIXELMILL_ENGINE=tensorrt, but TensorRT does not import"):
        choose(str(tiny_model), "tensorrt", cache, "cpu")
    with pytest.raises(ValueError):
        choose(str(tiny_model), "onnx", cache, "cpu")


def test_selection_with_tensorrt_needs_a_build_for_this_gpu(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision logic with TensorRT and a GPU faked: a build for this model/GPU/TensorRT is required."""
    import worker.engine.select as sel

    monkeypatch.setattr(sel, "tensorrt_version", lambda: "10.13.0")
    monkeypatch.setattr(sel, "gpu_arch", lambda device: "sm90")
    cache = EngineCache(tmp_path)
    assert choose(str(tiny_model), "auto", cache, "cuda").kind == "torch"
    with pytest.raises(EngineUnavailable, match="no engine for this model"):
        choose(str(tiny_model), "tensorrt", cache, "cuda")
    commit(cache, manifest(replace(KEY, model_hash=model_fingerprint(str(tiny_model)), gpu="sm89")))
    assert choose(str(tiny_model), "auto", cache, "cuda").kind == "torch"  # built on another GPU
    commit(cache, manifest(replace(KEY, model_hash=model_fingerprint(str(tiny_model)))))
    chosen = choose(str(tiny_model), "auto", cache, "cuda")
    assert chosen.kind == "tensorrt" and [m.key.gpu for m in chosen.manifests] == ["sm90"]


def test_engine_cache_setting_defaults_to_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.engine == "auto" and settings.engine_cache_path == (tmp_path / "engines").resolve()
    assert Settings(data_dir=tmp_path, engine_cache=tmp_path / "shared").engine_cache_path == tmp_path / "shared"


@pytest.mark.e2e
@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT imports here")
def test_worker_with_engine_tensorrt_records_why_items_failed(env: Env, tmp_path: Path) -> None:
    """`pixelmill worker --engine tensorrt` without TensorRT: every item fails with the reason, no image."""
    env.start_worker("--engine", "tensorrt", PIXELMILL_MAX_ATTEMPTS="1")
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 2))["job"]
    counts = env.wait_for(job, finished, timeout=120)
    assert counts["failed"] == 2, counts
    with env.ledger().session() as session:
        errors = session.scalars(select(Item.error).where(Item.job_id == job)).all()
    assert all(e is not None and "PIXELMILL_ENGINE=tensorrt, but TensorRT does not import" in e for e in errors), errors
    assert env.images() == []


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT imports here")
def test_tensorrt_modules_import_without_tensorrt_and_refuse_clearly(tiny_model: Path, tmp_path: Path) -> None:
    """The build and runtime modules are import-guarded: importing them works, using them says what is missing."""
    from worker.engine.trt_build import TensorRTMissing, build_engine
    from worker.engine.trt_runtime import TensorRTEngine

    with pytest.raises(TensorRTMissing, match="TensorRT does not import"):
        TensorRTEngine(str(tiny_model), [manifest()], EngineCache(tmp_path))
    with pytest.raises(TensorRTMissing, match="TensorRT does not import"):
        build_engine(tmp_path / "unet.onnx", tmp_path / "unet.plan", {})

"""The engine cache: compiled TensorRT engines with a manifest, in a directory every worker can share.

Layout: ``<cache>/<model fingerprint[:16]>/<key digest>/`` holds ``manifest.json`` plus the component files
(``unet.plan``, ``text_encoder.plan``, ``vae_decoder.plan``, and the ONNX they were built from). A build is
written into a temporary directory beside its final place and renamed into it as a whole, manifest
included, so a worker never sees a half-written build, and two hosts building the same key at once on
shared storage (NFS, a volume) leave exactly one complete build: the second rename fails and its copy is
discarded.

No torch here: the cache is read when choosing an engine, before anything heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout or the manifest changes incompatibly
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")
_SAMPLE = 1 << 20  # bytes hashed from each end of a weight file


def model_fingerprint(model: str) -> str:
    """A stable hash of a model's identity and weights, cheap enough to compute at every worker start.

    For a local diffusers directory: every config/tokenizer file in full, and each weight file by size plus
    its first and last MiB (hashing gigabytes of weights at every start would cost seconds; a retrained
    checkpoint changes its headers or its tails). For a hub id: the id (its revision is whatever diffusers
    resolved; build engines from local directories to pin weights).
    """
    digest = hashlib.sha256()
    root = Path(model).expanduser()
    if not root.is_dir():
        digest.update(f"hub:{model}".encode())
        return digest.hexdigest()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix in WEIGHT_SUFFIXES:
            size = path.stat().st_size
            digest.update(str(size).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read(_SAMPLE))
                if size > _SAMPLE:
                    fh.seek(max(_SAMPLE, size - _SAMPLE))
                    digest.update(fh.read())
        elif path.stat().st_size < 16 * _SAMPLE:  # configs, tokenizer files
            digest.update(path.read_bytes())
    return digest.hexdigest()


def calibration_hash(prompts: list[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything a compiled engine is only valid for. Equal keys are interchangeable builds."""

    model_hash: str
    precision: str  # UNet precision: int8 | fp8 | fp16 (text encoders and VAE decoder are fp16)
    width: int
    height: int
    batch_min: int
    batch_max: int
    gpu: str  # compute capability, e.g. "sm90": TensorRT plans only run on the architecture that built them
    trt_version: str
    # A brand LoRA fused into the UNet before calibration and export (worker/engine/lora.py `fused_unet`): its
    # file's sha256 and its scale. None: the base model. A build serves only requests with exactly this LoRA.
    lora_sha256: str | None = None
    lora_scale: float | None = None

    def digest(self) -> str:
        fields = asdict(self)
        if self.lora_sha256 is None:  # builds without a LoRA keep the digests (and directories) they had before
            del fields["lora_sha256"], fields["lora_scale"]
        payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def covers(self, width: int, height: int, batch: int) -> bool:
        return (width, height) == (self.width, self.height) and self.batch_min <= batch <= self.batch_max

    def serves(self, width: int, height: int, batch: int, lora: tuple[str, float] | None) -> bool:
        """Whether a request of this size and batch, with this LoRA (sha256, scale; None: none, or at scale 0)
        runs on this build."""
        built = None if self.lora_sha256 is None else (self.lora_sha256, float(self.lora_scale or 0.0))
        return self.covers(width, height, batch) and built == (None if lora is None else (lora[0], float(lora[1])))


@dataclass
class Manifest:
    """What was built, from what, with what: written last, beside the engines."""

    key: EngineKey
    model: str
    components: dict[str, dict[str, Any]]  # name -> {"file": ..., "precision": ..., ...}
    calibration_hash: str | None = None
    calibration_prompts: int = 0
    calibration_steps: int = 0
    quant_level: float | None = None
    created: str = ""
    tool_versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"engine manifest format {data.get('format')!r}, expected {FORMAT}")
        data["key"] = EngineKey(**data["key"])
        return cls(**data)

    @property
    def short_id(self) -> str:
        return self.key.digest()[:8]


class EngineCache:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def directory(self, key: EngineKey) -> Path:
        return self.root / key.model_hash[:16] / key.digest()

    def read(self, directory: Path) -> Manifest:
        return Manifest.from_json((directory / MANIFEST).read_text(encoding="utf-8"))

    def lookup(self, key: EngineKey) -> Manifest | None:
        """The build for exactly this key, if complete; a corrupt manifest counts as absent."""
        path = self.directory(key)
        try:
            manifest = self.read(path)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return manifest if manifest.key == key else None

    def find(self, model_hash: str, *, gpu: str, trt_version: str) -> list[Manifest]:
        """Every complete build of this model for this GPU architecture and TensorRT version."""
        found = []
        for path in sorted((self.root / model_hash[:16]).glob("*/" + MANIFEST)):
            try:
                manifest = self.read(path.parent)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            key = manifest.key
            if key.model_hash == model_hash and key.gpu == gpu and key.trt_version == trt_version:
                found.append(manifest)
        return found

    def staging(self, key: EngineKey) -> Path:
        """A fresh private directory on the same file system as the final one, for a build in progress."""
        path = self.directory(key).parent / f".build-{key.digest()}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, manifest: Manifest) -> Path:
        """Write the manifest into ``staging`` and rename it into place; if another build of the same key
        got there first, keep that one and discard ours. Returns the final directory."""
        final = self.directory(manifest.key)
        tmp = staging / (MANIFEST + ".tmp")
        tmp.write_text(manifest.to_json(), encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, staging / MANIFEST)
        try:
            os.rename(staging, final)
        except OSError:  # final exists (non-empty): a concurrent builder won
            shutil.rmtree(staging, ignore_errors=True)
            if self.lookup(manifest.key) is None:
                raise
        return final

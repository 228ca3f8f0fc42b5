"""Judging generated images: the safety checker's per-concept scores, CLIP score, aesthetic and technical scores.

Imported lazily by the worker after fork (it imports torch). One CLIP vision forward per image serves the
safety check, the CLIP score and the aesthetic score whenever the checker's vision tower is the CLIP model's
(it is for Stable Diffusion's checker and openai/clip-vit-large-patch14): the towers are compared weight
by weight at load time, and the duplicate is dropped.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from contract.checks import NONE, Checks, Safety, Verdict
from worker.engine import default_device
from worker.quality import technical_scores

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger(__name__)

# Image-processor fields that must agree for two models to share one preprocessed batch.
_PREPROCESSING = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


class AestheticHead(nn.Module):
    """The LAION "improved aesthetic predictor" MLP over an L2-normalised CLIP image embedding.

    Layer indices match its published state dict (`layers.0/2/4/6/7`), so those weights load unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.layers(embeds)
        return scores.squeeze(-1)

    @classmethod
    def load(cls, path: str | Path) -> AestheticHead:
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: dict[str, Any] = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        head = cls(state["layers.0.weight"].shape[1])
        head.load_state_dict(state)
        return head.eval()


class ConceptChecker:
    """Stable Diffusion's safety checker, scored like diffusers does but keeping every concept's score.

    A concept scores `cosine - threshold (+ 0.01 once a special-care concept fired)`; above 0 it is flagged.
    `shift` raises (positive) or lowers (negative: stricter) every threshold.
    """

    def __init__(self, path: str, shift: float, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        root = Path(path)
        weights = root / "safety_checker" if (root / "safety_checker").is_dir() else root
        # The checker class declares no SDPA support, so transformers must be asked for eager attention.
        self.model = (
            StableDiffusionSafetyChecker.from_pretrained(weights, torch_dtype=dtype, attn_implementation="eager")
            .to(device)
            .eval()
        )
        processor_dir = next(
            (
                d
                for d in (weights, root / "feature_extractor", weights.parent / "feature_extractor")
                if (d / "preprocessor_config.json").exists()
            ),
            None,
        )
        if processor_dir is None:
            raise FileNotFoundError(
                f"no preprocessor_config.json for the safety checker in {root} "
                "(beside the weights or in ../feature_extractor)"
            )
        self.processor = CLIPImageProcessor.from_pretrained(processor_dir)
        self.shift = shift
        self.id = f"sd-safety-checker:{root.name}"

    @property
    def tower(self) -> nn.Module:
        return _transformer(self.model.vision_model)

    def use_tower(self, tower: nn.Module) -> None:
        wrapper = self.model.vision_model
        if hasattr(wrapper, "vision_model"):
            wrapper.vision_model = tower
        else:
            self.model.vision_model = tower

    def decide(self, pooled: torch.Tensor) -> list[Safety]:
        m = self.model
        embeds = nn.functional.normalize(m.visual_projection(pooled).float())
        special = (embeds @ nn.functional.normalize(m.special_care_embeds.float()).T).cpu()
        concepts = (embeds @ nn.functional.normalize(m.concept_embeds.float()).T).cpu()
        special_thresholds = m.special_care_embeds_weights.float().cpu() + self.shift
        concept_thresholds = m.concept_embeds_weights.float().cpu() + self.shift
        verdicts = []
        for i in range(embeds.shape[0]):
            special_scores = special[i] - special_thresholds
            adjustment = 0.01 if bool((special_scores > 0).any()) else 0.0
            concept_scores = concepts[i] - concept_thresholds + adjustment
            scores = {f"special_{j}": round(float(s), 4) for j, s in enumerate(special_scores)}
            scores |= {f"concept_{j}": round(float(s), 4) for j, s in enumerate(concept_scores)}
            flagged = [f"concept_{j}" for j, s in enumerate(concept_scores) if s > 0]
            verdicts.append(
                Safety(checker=self.id, blocked=bool(flagged), flagged=tuple(flagged), scores=scores, shift=self.shift)
            )
        return verdicts


class NudeNetChecker:
    """The optional `nudenet` detector (pip install 'pixelmill[nudenet]'; the nudenet package is AGPL-3.0).

    Blocks an image when any exposed-body class is detected with confidence >= 0.5 + shift.
    """

    EXPOSED = (
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
    )

    def __init__(self, shift: float) -> None:
        from nudenet import NudeDetector

        self.detector = NudeDetector()
        self.threshold = 0.5 + shift
        self.id = "nudenet"

    def check(self, images: Sequence[Any]) -> list[Safety]:
        import numpy as np

        verdicts = []
        for image in images:
            bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
            found: dict[str, float] = {}
            for det in self.detector.detect(bgr):
                found[det["class"]] = max(found.get(det["class"], 0.0), round(float(det["score"]), 4))
            flagged = sorted(c for c in self.EXPOSED if found.get(c, 0.0) >= self.threshold)
            verdicts.append(
                Safety(
                    checker=self.id,
                    blocked=bool(flagged),
                    flagged=tuple(flagged),
                    scores=found,
                    threshold=self.threshold,
                )
            )
        return verdicts


class Judge:
    """The models one job's checks need, loaded once per process and run batched on the worker's device."""

    def __init__(self, checks: Checks, device: str | None = None) -> None:
        self.key = judge_key(checks)
        self.device = torch.device(device or default_device())
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.clip: CLIPModel | None = None
        self.clip_processor: CLIPProcessor | None = None
        self.aesthetic: AestheticHead | None = None
        if checks.clip_model:
            from transformers import CLIPModel, CLIPProcessor

            clip = CLIPModel.from_pretrained(checks.clip_model, torch_dtype=self.dtype)
            self.clip = clip.to(self.device).eval()
            self.clip_processor = CLIPProcessor.from_pretrained(checks.clip_model)
        if checks.aesthetic_head:
            self.aesthetic = AestheticHead.load(checks.aesthetic_head).to(self.device, torch.float32)
        self.concepts: ConceptChecker | None = None
        self.nudenet: NudeNetChecker | None = None
        if checks.image_checker == "nudenet":
            self.nudenet = NudeNetChecker(checks.safety_shift)
        elif checks.image_checker != NONE:
            self.concepts = ConceptChecker(checks.image_checker, checks.safety_shift, self.device, self.dtype)
        self.shared = self._share_tower()
        log.info(
            "judge loaded",
            extra={
                "checker": checks.image_checker,
                "clip": checks.clip_model,
                "aesthetic": checks.aesthetic_head,
                "shared_tower": self.shared,
            },
        )

    def _share_tower(self) -> bool:
        """Drop the checker's copy of the CLIP vision tower when it is the same weights and preprocessing."""
        if self.clip is None or self.concepts is None:
            return False
        mine, theirs = _transformer(self.clip.vision_model).state_dict(), self.concepts.tower.state_dict()
        same = mine.keys() == theirs.keys() and all(
            mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine
        )
        assert self.clip_processor is not None  # loaded with self.clip
        clip_pre = self.clip_processor.image_processor.to_dict()
        checker_pre = self.concepts.processor.to_dict()
        same = same and all(clip_pre.get(k) == checker_pre.get(k) for k in _PREPROCESSING)
        if same:
            self.concepts.use_tower(_transformer(self.clip.vision_model))
            gc.collect()
        return same

    @torch.inference_mode()
    def __call__(self, images: Sequence[Any], prompts: Sequence[str]) -> list[Verdict]:
        """One verdict per image, in order: scores, and the safety decision when the job has a checker."""
        scores = [technical_scores(image) for image in images]
        safety: Sequence[Safety | None] = [None] * len(images)
        pooled = None
        if self.clip is not None:
            assert self.clip_processor is not None  # loaded with self.clip
            pixels = self._pixels(self.clip_processor.image_processor, images)
            pooled = self.clip.vision_model(pixel_values=pixels).pooler_output
            image_embeds = nn.functional.normalize(self.clip.visual_projection(pooled).float())
            max_length = self.clip.config.text_config.max_position_embeddings
            tokens = self.clip_processor.tokenizer(
                list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(self.device)
            text = self.clip.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
            text_embeds = nn.functional.normalize(self.clip.text_projection(text.pooler_output).float())
            clip_scores = (100.0 * (image_embeds * text_embeds).sum(-1)).clamp(min=0.0).cpu()
            aesthetic = self.aesthetic(image_embeds).cpu() if self.aesthetic is not None else None
            for i, s in enumerate(scores):
                s["clip_score"] = float(clip_scores[i])
                if aesthetic is not None:
                    s["aesthetic"] = float(aesthetic[i])
        if self.concepts is not None:
            if not self.shared:
                pixels = self._pixels(self.concepts.processor, images)
                pooled = self.concepts.model.vision_model(pixels).pooler_output
            assert pooled is not None  # a shared tower's output comes from the CLIP forward above
            safety = self.concepts.decide(pooled)
        elif self.nudenet is not None:
            safety = self.nudenet.check(images)
        return [
            Verdict(scores={k: round(v, 4) for k, v in s.items()}, safety=v)
            for s, v in zip(scores, safety, strict=True)
        ]

    def _pixels(self, processor: Any, images: Sequence[Any]) -> torch.Tensor:
        batch = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        pixels: torch.Tensor = batch.pixel_values.to(self.device, self.dtype)
        return pixels


def _transformer(vision: nn.Module) -> nn.Module:
    """The vision transformer itself: transformers 4 wraps it in CLIPVisionModel.vision_model, 5 does not."""
    return getattr(vision, "vision_model", vision)


def judge_key(checks: Checks) -> tuple[Any, ...]:
    return (checks.image_checker, checks.safety_shift, checks.clip_model, checks.aesthetic_head)


_lock = threading.Lock()
_judge: Judge | None = None


def load_judge(checks: Checks) -> Judge:
    """The process's judge for these checks; like engines, one set of models stays loaded at a time."""
    global _judge
    with _lock:
        if _judge is None or _judge.key != judge_key(checks):
            _judge = None
            gc.collect()
            _judge = Judge(checks)
        return _judge

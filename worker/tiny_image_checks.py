"""Tiny random CLIP, safety checker and aesthetic head, written like the real ones so they load the same way.

No weights can be downloaded here, so tests and the demo judge images with models built from configs: a
CLIPModel with its processor (the tiny model's own BPE tokenizer), a diffusers StableDiffusionSafetyChecker
laid out like a Stable Diffusion repository (`safety_checker/` + `feature_extractor/`) whose vision tower
is the tiny CLIP's (so the one-forward sharing is exercised), and a LAION-layout aesthetic MLP. Their
scores mean nothing; the code that computes and stores them is the production code.
"""

from __future__ import annotations

from pathlib import Path

from worker.engine.tiny import build_tokenizer, clip_config

# Concept thresholds of the tiny checker: random 32-d concepts never reach a cosine this high, so it blocks
# nothing unless a test lowers every threshold with PIXELMILL_SAFETY_SHIFT.
TINY_CONCEPT_THRESHOLD = 0.9


def build_tiny_judges(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write `clip/`, `checker/{safety_checker,feature_extractor}/` and `aesthetic.safetensors` under `out_dir`;
    return their paths keyed by the setting each one is for."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from worker.image_checks import AestheticHead

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    projection_dim = 32
    config = clip_config(
        tokenizer,
        image_size=32,
        patch_size=8,
        projection_dim=projection_dim,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = CLIPModel(config).eval()  # PreTrainedModel.eval is unannotated
        # The checker class declares no SDPA support; transformers must be told to use eager attention.
        # transformers' configs accept extra kwargs (strict(accept_kwargs=True)), which mypy's dataclass view misses.
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(**config.to_dict(), attn_implementation="eager")
        ).eval()  # PreTrainedModel.eval is unannotated
        checker.vision_model.load_state_dict(clip.vision_model.state_dict())  # the same tower class
        checker.visual_projection.load_state_dict(clip.visual_projection.state_dict())
        with torch.no_grad():
            checker.concept_embeds.normal_()
            checker.special_care_embeds.normal_()
            checker.concept_embeds_weights.fill_(TINY_CONCEPT_THRESHOLD)
            checker.special_care_embeds_weights.fill_(TINY_CONCEPT_THRESHOLD)
        head = AestheticHead(projection_dim)

    clip_dir = out_dir / "clip"
    clip.save_pretrained(clip_dir)
    clip_processor = CLIPProcessor(  # its __init__ is unannotated
        image_processor=processor, tokenizer=tokenizer
    )
    clip_processor.save_pretrained(clip_dir)
    checker_dir = out_dir / "checker"
    checker.save_pretrained(checker_dir / "safety_checker")
    processor.save_pretrained(checker_dir / "feature_extractor")
    aesthetic = out_dir / "aesthetic.safetensors"
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(aesthetic))
    return {"image_checker": checker_dir, "clip_model": clip_dir, "aesthetic_head": aesthetic}

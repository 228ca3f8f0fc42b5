"""Which layers of a diffusers UNet NVIDIA's diffusion quantisation recipe quantises (no heavy imports: the torch
engine's torchao path uses it too)."""

from __future__ import annotations

import re

import torch

# Module-name fragments kept in high precision (diffusers UNet2DConditionModel naming).
SENSITIVE = re.compile(
    r"(^|\.)(time_embedding|time_emb_proj|conv_in|conv_out|conv_shortcut|proj_in|proj_out|add_embedding|"
    r"class_embedding|norm_out)(\.|$)"
)
QUANT_LEVELS = (1.0, 2.0, 2.5, 3.0)


def is_sensitive(name: str) -> bool:
    return SENSITIVE.search(name) is not None


def _linear_wanted(name: str, level: float) -> bool:
    if level >= 3:
        return True
    if level >= 2 and ".ff.net." in f".{name}.":
        return True
    return level >= 2.5 and re.search(r"\.to_(q|k|v|qkv|kv)$", name) is not None


def quantised_layers(unet: torch.nn.Module, level: float = 2.5) -> list[str]:
    """Names of the Conv2d/Linear modules the recipe quantises at ``level``."""
    if level not in QUANT_LEVELS:
        raise ValueError(f"quant_level must be one of {QUANT_LEVELS}, got {level}")
    names = []
    for name, module in unet.named_modules():
        if is_sensitive(name):
            continue
        if isinstance(module, torch.nn.Conv2d) or (isinstance(module, torch.nn.Linear) and _linear_wanted(name, level)):
            names.append(name)
    return names

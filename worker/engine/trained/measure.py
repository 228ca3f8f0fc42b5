"""The two rates the trained models are judged by, computed from pixels and a scorer (no reference to training).

`background_colour`: the named colour most of a picture's border pixels are nearest to. `distractors`: four
wrong captions for a scene, each changing one thing (background colour, texture, product, product colour), so
ranking the true caption first needs every part of it, not the background colour alone; `random_distractors`:
four random captions, the easier and more usual form of the test.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .render import COLOURS, PRODUCTS, TEXTURES, Scene

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
BORDER = 6  # pixels of each edge; the product sits in the middle


def background_colour(image: Any, border: int = BORDER) -> str:
    """The named colour (render.COLOURS) that most border pixels are nearest to, in RGB distance."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = True, True, True, True
    pixels = rgb[mask]
    nearest = ((pixels[:, None, :] - _PALETTE[None]) ** 2).sum(-1).argmin(1)
    return _NAMES[Counter(nearest.tolist()).most_common(1)[0][0]]


def distractors(scene: Scene, seed: int) -> list[Scene]:
    """Four scenes unlike `scene` in exactly one part each (the product's colour never the background's)."""
    rng = random.Random(seed)
    b = rng.choice([c for c in COLOURS if c not in (scene.background, scene.product_colour)])
    t = rng.choice([x for x in TEXTURES if x != scene.texture])
    p = rng.choice([x for x in PRODUCTS if x != scene.product])
    c = rng.choice([x for x in COLOURS if x not in (scene.product_colour, scene.background)])
    return [
        Scene(scene.product, scene.product_colour, b, scene.texture),
        Scene(scene.product, scene.product_colour, scene.background, t),
        Scene(p, scene.product_colour, scene.background, scene.texture),
        Scene(scene.product, c, scene.background, scene.texture),
    ]


def random_distractors(scene: Scene, seed: int) -> list[Scene]:
    """Four other scenes drawn at random from the whole vocabulary (most differ from `scene` in several parts)."""
    rng = random.Random(seed)
    out: list[Scene] = []
    while len(out) < 4:
        background = rng.choice(_NAMES)
        colour = rng.choice([c for c in _NAMES if c != background])
        other = Scene(rng.choice(PRODUCTS), colour, background, rng.choice(TEXTURES))
        if other != scene and other not in out:
            out.append(other)
    return out


def colour_rate(images: Sequence[Any], scenes: Sequence[Scene]) -> float:
    """The fraction of pictures whose background_colour is the caption's background colour."""
    hits = sum(background_colour(im) == s.background for im, s in zip(images, scenes, strict=True))
    return hits / len(scenes)


def rank_rate(
    judge: Any, images: Sequence[Any], scenes: Sequence[Scene], seed: int = 0, *, one_part: bool = True
) -> float:
    """The fraction of pictures for which `judge(image, captions)` (one score per caption) scores the true
    caption above its four distractors: `distractors` (one_part) or `random_distractors`."""
    pick = distractors if one_part else random_distractors
    hits = 0
    for i, (image, scene) in enumerate(zip(images, scenes, strict=True)):
        captions = [scene.caption] + [d.caption for d in pick(scene, seed * 100_003 + i)]
        scores = judge(image, captions)
        hits += int(max(range(len(captions)), key=lambda k: scores[k]) == 0)
    return hits / len(scenes)

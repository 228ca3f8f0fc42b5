"""Captioned 64x64 product scenes drawn from a fixed vocabulary, reproducible from a seed (numpy and PIL only).

A scene is a product in one colour on a background in another colour and a texture, captioned in the
catalogue's template style: "a red mug on a teal marble background". Textures change a minority of the
background's pixels only, so the named background colour stays the nearest named colour of most border
pixels (`measure.background_colour` relies on that). The (background colour, texture, product) triples are
split once into training and held-out ones, so held-out captions are combinations training never showed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
_SCALE = 2  # drawn at twice the size and box-filtered down: anti-aliased edges
# The 16 basic CSS colours (navy and teal among them) plus beige.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "silver": (192, 192, 192),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
    "maroon": (128, 0, 0),
    "red": (255, 0, 0),
    "purple": (128, 0, 128),
    "fuchsia": (255, 0, 255),
    "green": (0, 128, 0),
    "lime": (0, 255, 0),
    "olive": (128, 128, 0),
    "yellow": (255, 255, 0),
    "navy": (0, 0, 128),
    "blue": (0, 0, 255),
    "teal": (0, 128, 128),
    "aqua": (0, 255, 255),
    "beige": (245, 245, 220),
}
TEXTURES = ("plain", "gradient", "wood grain", "marble", "brick", "polka dot", "striped")
PRODUCTS = ("mug", "bottle", "shoe", "lamp", "box", "chair", "vase", "bowl")
HELD_OUT_FRACTION = 0.15
SPLIT_SEED = 27


@dataclass(frozen=True)
class Scene:
    """What one picture shows; `caption` is its prompt."""

    product: str
    product_colour: str
    background: str
    texture: str

    @property
    def caption(self) -> str:
        return f"{_a(self.product_colour)} {self.product} on {_a(self.background)} {self.texture} background"

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.background, self.texture, self.product)


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def vocabulary() -> list[str]:
    """Every word a caption can hold (the tokenizer's corpus)."""
    words = {"a", "an", "on", "background", *PRODUCTS, *COLOURS}
    for texture in TEXTURES:
        words.update(texture.split())
    return sorted(words)


def held_out_triples() -> frozenset[tuple[str, str, str]]:
    """The (background colour, texture, product) triples training never sees: a fixed 15 % of all of them."""
    triples = [(b, t, p) for b in COLOURS for t in TEXTURES for p in PRODUCTS]
    random.Random(SPLIT_SEED).shuffle(triples)
    return frozenset(triples[: round(len(triples) * HELD_OUT_FRACTION)])


def scenes(count: int, seed: int, *, held_out: bool) -> list[Scene]:
    """`count` scenes from the training (held_out=False) or held-out triples, the product's colour never the
    background's; the same seed gives the same list."""
    rng = random.Random(seed)
    hidden = held_out_triples()
    pool = (
        sorted(hidden)
        if held_out
        else sorted({(b, t, p) for b in COLOURS for t in TEXTURES for p in PRODUCTS} - hidden)
    )
    out = []
    for _ in range(count):
        background, texture, product = rng.choice(pool)
        colour = rng.choice([c for c in COLOURS if c != background])
        out.append(Scene(product, colour, background, texture))
    return out


def _shade(rgb: np.ndarray, amount: float | np.ndarray) -> np.ndarray:
    """Move a colour towards white (dark colours) or black (light ones) by `amount` (0..1)."""
    luma = float(rgb @ np.array([0.299, 0.587, 0.114]))
    target = np.full(3, 255.0) if luma < 110 else np.zeros(3)
    # white, beige and silver lie close together: strokes on the light ones are fainter
    strength = np.asarray(amount, dtype=np.float32)[..., None] * (0.35 if luma > 200 else 1.0)
    shaded: np.ndarray = rgb + strength * (target - rgb)
    return shaded


def background(colour: str, texture: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A (size, size, 3) float array: the colour with the texture in lighter or darker strokes."""
    base = np.array(COLOURS[colour], dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * (SIZE / size)
    phase = float(rng.uniform(0, 2 * np.pi))
    amount = np.zeros((size, size), dtype=np.float32)
    if texture == "gradient":
        angle = float(rng.uniform(0, 2 * np.pi))
        t = (np.cos(angle) * (x - 32) + np.sin(angle) * (y - 32)) / 45 + 0.5
        amount = 0.3 * np.clip(t, 0, 1) ** 1.5
    elif texture == "wood grain":
        wave = np.sin(y * 0.55 + 2.5 * np.sin(x * 0.07 + phase) + phase)
        amount = 0.4 * (wave > 0.75) + 0.06 * (1 + np.sin(y * 0.2 + phase))
    elif texture == "marble":
        swirl = np.sin(x * 0.05 + phase) * 6 + np.sin(y * 0.09 + 2 * phase) * 5
        amount = 0.45 * (np.abs(np.sin((x + y) * 0.12 + swirl)) < 0.18)
    elif texture == "brick":
        row = np.floor((y + phase) / 8)
        offset = (row % 2) * 8
        mortar = ((y + phase) % 8 < 1.5) | ((x + offset + phase * 2) % 16 < 1.5)
        amount = np.where(mortar, 0.5, 0.08 * ((row * 7 + np.floor((x + offset) / 16)) % 3) / 2)
    elif texture == "polka dot":
        gx, gy = (x + phase * 2) % 12 - 6, (y + phase * 2) % 12 - 6
        amount = 0.5 * (gx * gx + gy * gy < 10)
    elif texture == "striped":
        amount = 0.5 * ((x + y + phase * 2) % 11 < 3)
    elif texture != "plain":
        raise ValueError(f"unknown texture {texture!r}")
    noise = rng.normal(0, 2.0, (size, size, 3))
    return np.clip(_shade(base, amount) + noise, 0, 255)


def _at(cx: float, cy: float, s: float, *points: tuple[float, float]) -> list[tuple[float, float]]:
    """Points given in units of the product's size `s` around its centre, in pixels."""
    return [(cx + x * s, cy + y * s) for x, y in points]


Draw = Callable[[ImageDraw.ImageDraw, float, float, float, tuple[int, ...], tuple[int, ...]], None]


def _mug(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    d.ellipse([cx + 0.2 * s, cy - 0.3 * s, cx + 0.75 * s, cy + 0.3 * s], outline=edge, width=int(s * 0.16))
    d.ellipse([cx + 0.24 * s, cy - 0.26 * s, cx + 0.71 * s, cy + 0.26 * s], outline=fill, width=int(s * 0.1))
    d.rectangle([cx - 0.5 * s, cy - 0.5 * s, cx + 0.4 * s, cy + 0.55 * s], fill=fill, outline=edge, width=3)


def _bottle(
    d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]
) -> None:
    d.rounded_rectangle(
        [cx - 0.32 * s, cy - 0.3 * s, cx + 0.32 * s, cy + 0.8 * s], 0.12 * s, fill=fill, outline=edge, width=3
    )
    d.polygon(_at(cx, cy, s, (-0.32, -0.25), (-0.12, -0.6), (0.12, -0.6), (0.32, -0.25)), fill=fill, outline=edge)
    d.rectangle([cx - 0.12 * s, cy - 0.95 * s, cx + 0.12 * s, cy - 0.6 * s], fill=fill, outline=edge, width=3)
    d.rectangle([cx - 0.15 * s, cy - 1.05 * s, cx + 0.15 * s, cy - 0.88 * s], fill=edge)


def _shoe(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    top = _at(
        cx, cy, s, (-0.8, 0.35), (-0.8, -0.45), (-0.35, -0.45), (-0.2, -0.1), (0.55, 0.05), (0.85, 0.3), (0.85, 0.35)
    )
    d.polygon(top, fill=fill, outline=edge, width=3)
    d.rectangle([cx - 0.85 * s, cy + 0.35 * s, cx + 0.9 * s, cy + 0.5 * s], fill=edge)


def _lamp(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    d.rectangle([cx - 0.06 * s, cy - 0.3 * s, cx + 0.06 * s, cy + 0.75 * s], fill=edge)
    d.ellipse([cx - 0.4 * s, cy + 0.65 * s, cx + 0.4 * s, cy + 0.9 * s], fill=fill, outline=edge, width=3)
    shade = _at(cx, cy, s, (-0.3, -0.95), (0.3, -0.95), (0.6, -0.2), (-0.6, -0.2))
    d.polygon(shade, fill=fill, outline=edge, width=3)


def _box(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    light = tuple(min(255, int(c * 0.75 + 64)) for c in fill)
    dark = tuple(int(c * 0.7) for c in fill)
    d.polygon(_at(cx, cy, s, (-0.6, -0.3), (-0.25, -0.65), (0.7, -0.65), (0.35, -0.3)), fill=light, outline=edge)
    d.polygon(_at(cx, cy, s, (0.35, -0.3), (0.7, -0.65), (0.7, 0.4), (0.35, 0.75)), fill=dark, outline=edge)
    d.rectangle([cx - 0.6 * s, cy - 0.3 * s, cx + 0.35 * s, cy + 0.75 * s], fill=fill, outline=edge, width=3)


def _chair(
    d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]
) -> None:
    d.rectangle([cx - 0.5 * s, cy - 0.95 * s, cx - 0.32 * s, cy + 0.9 * s], fill=fill, outline=edge, width=2)
    d.rectangle([cx + 0.38 * s, cy + 0.1 * s, cx + 0.55 * s, cy + 0.9 * s], fill=fill, outline=edge, width=2)
    d.rectangle([cx - 0.5 * s, cy - 0.02 * s, cx + 0.6 * s, cy + 0.16 * s], fill=fill, outline=edge, width=3)


def _vase(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    d.rectangle([cx - 0.16 * s, cy - 0.75 * s, cx + 0.16 * s, cy - 0.1 * s], fill=fill, outline=edge, width=3)
    d.ellipse([cx - 0.32 * s, cy - 0.9 * s, cx + 0.32 * s, cy - 0.7 * s], fill=fill, outline=edge, width=3)
    d.ellipse([cx - 0.5 * s, cy - 0.3 * s, cx + 0.5 * s, cy + 0.85 * s], fill=fill, outline=edge, width=3)


def _bowl(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, fill: tuple[int, ...], edge: tuple[int, ...]) -> None:
    d.chord([cx - 0.85 * s, cy - 0.6 * s, cx + 0.85 * s, cy + 0.7 * s], 0, 180, fill=fill, outline=edge, width=3)
    d.ellipse([cx - 0.85 * s, cy - 0.1 * s, cx + 0.85 * s, cy + 0.2 * s], fill=edge)
    d.ellipse([cx - 0.78 * s, cy - 0.06 * s, cx + 0.78 * s, cy + 0.14 * s], fill=fill)
    d.rectangle([cx - 0.3 * s, cy + 0.62 * s, cx + 0.3 * s, cy + 0.75 * s], fill=edge)


SHAPES: dict[str, Draw] = {
    "mug": _mug,
    "bottle": _bottle,
    "shoe": _shoe,
    "lamp": _lamp,
    "box": _box,
    "chair": _chair,
    "vase": _vase,
    "bowl": _bowl,
}


def render(scene: Scene, seed: int) -> Image.Image:
    """One 64x64 RGB picture of the scene; equal seeds give equal pixels."""
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE
    canvas = Image.fromarray(background(scene.background, scene.texture, rng, big).astype(np.uint8))
    fill = COLOURS[scene.product_colour]
    edge = tuple(int(v) for v in _shade(np.array(fill, dtype=np.float32), 0.45))
    cx = big / 2 + float(rng.uniform(-5, 5)) * _SCALE
    cy = big / 2 + float(rng.uniform(-3, 5)) * _SCALE
    s = float(rng.uniform(17, 21)) * _SCALE
    draw = ImageDraw.Draw(canvas)
    draw.ellipse(
        [cx - 0.8 * s, cy + 0.78 * s, cx + 0.8 * s, cy + 0.98 * s],
        fill=tuple(int(v) for v in _shade(np.array(COLOURS[scene.background], dtype=np.float32), 0.25)),
    )
    SHAPES[scene.product](draw, cx, cy, s, fill, edge)
    return canvas.resize((SIZE, SIZE), Image.Resampling.BOX)


def dataset(count: int, seed: int, *, held_out: bool = False) -> Iterator[tuple[Scene, Image.Image]]:
    """(scene, picture) pairs; picture i is drawn from seed `seed * 1_000_003 + i`."""
    for i, scene in enumerate(scenes(count, seed, held_out=held_out)):
        yield scene, render(scene, seed * 1_000_003 + i)

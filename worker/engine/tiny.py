"""A tiny Stable-Diffusion-architecture pipeline that the project builds itself.

No model can be downloaded in CI, yet the engine must be exercised through diffusers' real loading
and sampling code. So this module writes a complete, randomly initialised SD 1.x-shaped pipeline
(UNet, VAE, CLIP text encoder, CLIP BPE tokenizer, Euler scheduler) to disk with ``save_pretrained``.
Its images are noise, but everything that matters to the engine -- loading, batching, seeding,
per-item generators, sizes, timings -- runs exactly as for a real checkpoint, in well under a second.

The tokenizer's vocabulary is generated here too, by a small byte-level BPE trainer over a built-in
e-commerce corpus, so no third-party vocabulary file is needed.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_TOKENS = 77  # CLIP's context length; SD pads every prompt to it.

# Product-listing language: the words a batch of e-commerce prompts is made of.
CORPUS = """
studio photo of a red ceramic mug on a white background, soft light, product shot
professional product photography of a blue cotton t-shirt, front view, plain backdrop
a pair of leather running shoes, side view, clean white background, high detail
minimalist wooden desk lamp with a brass base, warm lighting, catalog photo
stainless steel water bottle, matte black finish, studio lighting, sharp focus
handmade ceramic bowl set, pastel colors, top view, natural shadow
wireless bluetooth headphones, over ear, silver and black, floating on white
women's summer dress, floral pattern, mannequin, full length, fashion catalog
men's wool winter coat, charcoal grey, hanging on a hanger, studio background
kids plush teddy bear toy, brown fur, cute, isolated on white
organic skincare serum in an amber glass bottle with a dropper, marble surface
scented soy candle in a glass jar, cozy living room, warm bokeh
gold necklace with a small pendant, jewelry photography, velvet display
smartphone case, transparent silicone, shock proof, product render
ergonomic office chair, mesh back, adjustable arms, three quarter view
cast iron skillet with a wooden handle, rustic kitchen table, overhead shot
yoga mat, rolled up, purple, non slip, gym background
coffee beans in a kraft paper bag, label mockup, dark roast, studio shot
vintage denim jacket, light wash, flat lay, clean composition
luxury wrist watch, stainless steel bracelet, black dial, reflection, macro
cotton bath towels stacked, soft texture, spa setting, natural light
sports sneakers, white and green, new arrival, sale, free shipping
backpack for travel, waterproof nylon, many pockets, outdoor scene
glass teapot with loose leaf green tea, bright kitchen, morning sunlight
set of kitchen knives on a magnetic strip, chef quality, close up
indoor potted plant in a terracotta pot, monstera leaves, bright room
bamboo cutting board with fresh vegetables, healthy cooking, top down
sunglasses with polarized lenses, tortoise shell frame, beach background
electric toothbrush with charging stand, bathroom counter, clean and modern
silk scarf with geometric print, elegant, folded, boutique display
laptop sleeve, felt material, grey, fits thirteen inch notebook
children's colorful building blocks, educational toy, playroom floor
handcrafted leather wallet, brown, stitched edges, gift box
perfume bottle with gold cap, elegant, reflection on glossy surface
winter knit beanie hat, chunky wool, cream color, cozy style
portable speaker, rugged design, orange, outdoor adventure, waterproof
baby stroller, lightweight, foldable, park background, family
running shorts, breathable fabric, navy blue, athletic wear
ceramic vase with dried flowers, scandinavian interior, soft shadows
gaming mouse with rgb lighting, dark desk, dramatic light
high quality, best seller, limited edition, premium material, eco friendly
photorealistic, detailed, sharp, 4k, 8k, professional lighting, commercial photo
blurry, low quality, watermark, text, logo, distorted, deformed, cropped
"""


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, as byte-level BPE (GPT-2/CLIP) does.

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, ...) are shifted to
    code points from 256 upward so that no BPE symbol is whitespace or invisible. The tokenizer
    backend applies the same mapping, so the vocabulary must be written in these symbols.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _words(text: str) -> list[str]:
    """Split like CLIP's pre-tokenizer does for ASCII text: letter runs, single digits, punctuation runs."""
    return re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower())


def train_bpe(corpus: str, num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn CLIP-format byte-level BPE merges over ``corpus``; return (vocab, merges).

    Vocabulary layout follows CLIP's: the 256 byte symbols, the same symbols with ``</w>``
    (a word's last symbol carries the end-of-word marker), one token per merge, then the two
    special tokens. Ties between equally frequent pairs break lexicographically, so the result
    is deterministic.
    """
    byte_symbols = bytes_to_unicode()
    word_counts = Counter(_words(corpus))
    # Each word as a tuple of symbols, the last one marked as word-final.
    words: dict[tuple[str, ...], int] = {}
    for word, count in word_counts.items():
        symbols = [byte_symbols[b] for b in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        words[tuple(symbols)] = words.get(tuple(symbols), 0) + count

    symbols = list(byte_symbols.values())
    tokens = symbols + [s + END_OF_WORD for s in symbols]
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for parts, count in words.items():
            for pair in zip(parts, parts[1:]):
                pairs[pair] += count
        if not pairs:
            break  # every word is a single token already
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged = best[0] + best[1]
        if merged not in tokens:
            tokens.append(merged)
        words = {_apply_merge(word, best, merged): count for word, count in words.items()}

    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def _apply_merge(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def build_tokenizer(num_merges: int = 400) -> CLIPTokenizer:
    """Write vocab.json + merges.txt, load them with CLIPTokenizer.from_pretrained and sanity-check.

    Loading from a directory (not ``CLIPTokenizer(vocab_file=...)``, which transformers 5 ignores)
    goes through the same code path as a real checkpoint's tokenizer folder.
    """
    from transformers import CLIPTokenizer

    vocab, merges = train_bpe(CORPUS, num_merges)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
        (Path(tmp) / "merges.txt").write_text(merges_txt, encoding="utf-8")
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_TOKENS)

    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, wrote {len(vocab)}")
    probe = "studio photo of a red ceramic mug, white background"
    ids = tokenizer(probe).input_ids
    if len(ids) <= 5 or ids[0] != vocab[BOS] or ids[-1] != vocab[EOS]:
        raise RuntimeError(f"tokenizer produced unexpected ids for {probe!r}: {ids}")
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    # CLIP's decoder puts a space after every word-final token, punctuation included.
    if not isinstance(decoded, str) or decoded.replace(" ,", ",") != probe:  # one id sequence: one string
        raise RuntimeError(f"tokenizer round trip failed: {probe!r} -> {decoded!r}")
    return tokenizer


UNET: dict[str, Any] = dict(  # the tiny UNet but for its input channels (4, or 9 for inpainting)
    sample_size=32,  # latent side = image side / 2 with this VAE; 32 latents = the 64px default size
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # every attention projection, as brand LoRAs train them


def clip_config(
    tokenizer: CLIPTokenizer, *, image_size: int, patch_size: int, projection_dim: int, **layers: int
) -> Any:
    """A CLIPConfig for a small CLIP whose text tower fits `tokenizer` (its vocabulary and special tokens) and whose
    two towers share `layers` (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **layers,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **layers),
        projection_dim=projection_dim,
    )


def build_tiny_lora(out_file: Path, seed: int = 0, rank: int = 4) -> Path:
    """A random rank-`rank` LoRA for the tiny UNet's attention layers (both the text and the inpainting UNet: they
    differ only in their first convolution), made with peft and written with diffusers' ``save_lora_weights``, the
    layout real LoRAs are loaded from. Its B matrices are random, not peft's zeros, so at scale 1 it changes the
    image. Equal seeds give byte-identical files."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise ValueError(f"a LoRA file ends in .safetensors, got {out_file.name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(in_channels=4, **UNET)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=False)
        unet.add_adapter(config)
    layers = get_peft_model_state_dict(unet)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    kind: Any = StableDiffusionPipeline
    kind.save_lora_weights(out_file.parent, unet_lora_layers=layers, weight_name=out_file.name)
    return out_file


def build_tiny_inpaint_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """The tiny pipeline as an inpainting model: its UNet takes 9 input channels (4 noisy latents, 1 mask, 4
    latents of the masked photo), as SD inpainting checkpoints do, saved as a ``StableDiffusionInpaintPipeline``
    and loaded with ``from_pretrained`` like them. The product photos' background mode runs on it."""
    return build_tiny_pipeline(out_dir, seed, inpaint=True)


def build_tiny_pipeline(out_dir: Path, seed: int = 0, *, inpaint: bool = False) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``out_dir``; return ``out_dir``.

    All weights are drawn from ``torch.manual_seed(seed)`` inside a forked RNG (the caller's global
    RNG is untouched), so equal seeds give byte-identical safetensors files. ``inpaint``: a 9-channel UNet in a
    ``StableDiffusionInpaintPipeline`` (``build_tiny_inpaint_pipeline``).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    # The ignores below: mypy sees diffusers' top-level names as its untyped placeholder (dummy) classes.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(in_channels=9 if inpaint else 4, **UNET)
        vae = AutoencoderKL(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=32,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_TOKENS,
                projection_dim=32,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    # SD 1.x's noise schedule (scaled_linear 0.00085..0.012 over 1000 steps, epsilon, offset 1).
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    kind: Any = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = kind(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return out_dir

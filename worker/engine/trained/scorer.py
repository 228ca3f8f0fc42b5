"""Train the scene scorer: a tiny CLIPModel (and its processor) learnt contrastively on rendered scenes.

It is saved with `save_pretrained` beside a CLIPProcessor, the layout `PIXELMILL_CLIP_MODEL` names, so the
worker's `Judge` loads it like openai/clip-vit-large-patch14 and its `clip_score` says whether a picture shows
its prompt's colours, texture and product. Its text tower is the trained pipeline's text encoder too.

    nice -n 10 python -m worker.engine.trained.scorer models/scenes64/scorer
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from worker.engine.tiny import BOS, EOS, MAX_TOKENS, clip_config, train_bpe

from . import measure, render

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPTokenizer

log = logging.getLogger("pixelmill.trained")
MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation, as CLIPImageProcessor defaults it
STD = (0.26862954, 0.26130258, 0.27577711)


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer in which every caption word is one token (other text falls back to bytes)."""
    from transformers import CLIPTokenizer

    corpus = " ".join(word for word in render.vocabulary() for _ in range(3)) + " , studio photo of"
    vocab, merges = train_bpe(corpus, num_merges=2000)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
        (Path(tmp) / "merges.txt").write_text(merges_txt, encoding="utf-8")
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_TOKENS)
    caption = render.Scene("mug", "red", "teal", "polka dot").caption
    if len(tokenizer(caption).input_ids) != len(caption.split()) + 2 or tokenizer.bos_token != BOS:
        raise RuntimeError(f"the scene tokenizer does not give one token per word of {caption!r}")
    assert tokenizer.eos_token == EOS
    return tokenizer


def new_model(tokenizer: CLIPTokenizer) -> CLIPModel:
    from transformers import CLIPModel

    config = clip_config(
        tokenizer,
        image_size=render.SIZE,
        patch_size=16,
        projection_dim=64,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
    )
    model: CLIPModel = CLIPModel(config)
    return model


def pixels(images: list[Any] | np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) pictures as the normalised (N, 3, 64, 64) batch CLIPImageProcessor would make."""
    array = np.stack([np.asarray(im.convert("RGB")) for im in images]) if isinstance(images, list) else images
    x = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur a third of the batch and add a little noise: generated pictures are softer than drawn ones."""
    blurred = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    pick = (torch.rand(x.shape[0], 1, 1, 1, generator=generator) < 0.33).float()
    return pick * blurred + (1 - pick) * x + 0.05 * torch.randn(x.shape, generator=generator)


def scores(model: CLIPModel, tokenizer: CLIPTokenizer, x: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """(images, captions) cosine similarities, as the Judge's clip_score computes them (before x100)."""
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    pooled = model.vision_model(pixel_values=x).pooler_output
    image = nn.functional.normalize(model.visual_projection(pooled), dim=-1)
    text_out = model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    text = nn.functional.normalize(model.text_projection(text_out.pooler_output), dim=-1)
    return image @ text.T


def held_out_rank_rate(model: CLIPModel, tokenizer: CLIPTokenizer, count: int = 300, seed: int = 99) -> float:
    """Top-1-of-5 on rendered held-out scenes (measure.rank_rate over the model)."""
    pairs = list(render.dataset(count, seed, held_out=True))

    @torch.no_grad()
    def judge(image: Any, captions: list[str]) -> list[float]:
        return [float(s) for s in scores(model, tokenizer, pixels([image]), captions)[0]]

    model.eval()
    rate = measure.rank_rate(judge, [im for _, im in pairs], [s for s, _ in pairs], seed=seed)
    model.train()
    return rate


def train(
    out: Path, *, images: int, steps: int, batch: int, minutes: float, seed: int = 0, check: int = 300
) -> dict[str, Any]:
    """Train and save the scorer; `check`: held-out scenes for the top-1-of-5 rate logged at each save."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tokenizer = build_tokenizer()
    model = new_model(tokenizer).train()
    started = time.monotonic()
    data = list(render.dataset(images, seed))
    array = np.stack([np.asarray(im) for _, im in data])
    captions = [s.caption for s, _ in data]
    log.info("rendered %d scenes in %.0f s", images, time.monotonic() - started)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    processor = CLIPImageProcessor(size={"shortest_edge": render.SIZE}, crop_size=render.SIZE)
    rate, step = 0.0, 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, images, (batch,), generator=generator).numpy()
        x = _augment(pixels(array[idx]), generator)
        logits = model.logit_scale.exp() * scores(model, tokenizer, x, [captions[i] for i in idx])
        target = torch.arange(batch)
        loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimiser.step()
        schedule.step()
        over = time.monotonic() - started > minutes * 60
        if step % 50 == 0:
            log.info("step %d loss %.3f (%.0f s)", step, loss.item(), time.monotonic() - started)
        if step % 400 == 0 or step == steps or over:
            rate = held_out_rank_rate(model, tokenizer, count=check)
            log.info("step %d held-out top-1-of-5 %.3f", step, rate)
            model.save_pretrained(out)
            CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(out)
        if over:
            break
    return {"steps": step, "seconds": round(time.monotonic() - started), "held_out_top1_of_5": rate}


def write_aesthetic_head(path: Path, dim: int = 64, seed: int = 0) -> Path:
    """A LAION-layout aesthetic head over this scorer's embeddings, random like the tiny judges' (nothing here
    could teach it taste): the demo's `aesthetic` score keeps working, and means as little as before."""
    from safetensors.torch import save_file

    from worker.image_checks import AestheticHead

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = AestheticHead(dim)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--aesthetic", type=Path, help="only write the random aesthetic head here, and stop")
    parser.add_argument("--images", type=int, default=16000, help="scenes rendered for training")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument(
        "--batch", type=int, default=128, help="image-caption pairs per step (the contrastive negatives)"
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="stop (and save) after this wall time")
    parser.add_argument("--threads", type=int, default=1, help="1: on a loaded machine, 2 threads were 15x slower")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.aesthetic:
        write_aesthetic_head(args.aesthetic)
        return
    result = train(args.out, images=args.images, steps=args.steps, batch=args.batch, minutes=args.minutes)
    (args.out / "training.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log.info("done: %s", result)


if __name__ == "__main__":
    main()

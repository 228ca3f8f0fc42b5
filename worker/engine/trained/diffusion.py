"""Train the scene pipeline: a small Stable-Diffusion-layout latent diffusion model on rendered scenes.

Three stages, each checkpointed: an AutoencoderKL (64x64 pictures <-> 8x8x4 latents), then a
UNet2DConditionModel conditioned on the frozen text tower of the scene scorer (`scorer.py`; a CLIPTextModel and
its tokenizer, as SD conditions on CLIP's), then the whole pipeline written with `save_pretrained`, so the worker
loads it with `from_pretrained` like any checkpoint. The noise schedule has zero terminal SNR and the UNet
predicts v, so the first step sees pure noise and must take the background colour from the prompt (an SD 1.x
schedule leaks the noise's mean into the picture's). Captions are dropped 10 % of the time: classifier-free
guidance works.

    nice -n 10 python -m worker.engine.trained.diffusion models/scenes64/scorer models/scenes64/pipeline
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import render

log = logging.getLogger("pixelmill.trained")
LATENT = render.SIZE // 8  # 8x8 latents: the UNet is cheap enough to train on two shared cores
CHANNELS = 4  # as SD 1.x: the worker (background mode, diffusers inpainting) expects a 4-channel UNet
CROP = 32


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=render.SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=CHANNELS,
        norm_num_groups=16,
    )


def build_unet(cross_attention_dim: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        block_out_channels=(48, 96),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,  # diffusers' legacy name: the number of heads
        norm_num_groups=16,
    )


def noise_schedule() -> dict[str, Any]:
    """SD 1.x's betas rescaled to zero terminal SNR, v-prediction, trailing timesteps (Lin et al. 2023)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )


def to_unit(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(vae: Any, pictures: np.ndarray, *, steps: int, batch: int, seconds: float, seed: int) -> int:
    """L1 + MSE reconstruction from the posterior mean, a light KL term; returns the steps taken (at most
    `seconds` of them)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    started = time.monotonic()
    vae.train()
    step = 0
    for step in range(1, steps + 1):
        # random 32x32 crops: a quarter of the cost, and the autoencoder is convolutional (it sees 64x64 later)
        top, left = torch.randint(0, render.SIZE - CROP + 1, (2,), generator=generator).tolist()
        picked = pictures[torch.randint(0, len(pictures), (batch,), generator=generator).numpy()]
        x = to_unit(np.ascontiguousarray(picked[:, top : top + CROP, left : left + CROP]))
        posterior = vae.encode(x).latent_dist
        # decoded from the posterior's mean: a sampled latent drowns the signal early on (a stalled run showed it)
        out = vae.decode(posterior.mode()).sample
        loss = nn.functional.l1_loss(out, x) + nn.functional.mse_loss(out, x) + 1e-6 * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            log.info("vae step %d loss %.4f (%.0f s)", step, loss.item(), time.monotonic() - started)
        if time.monotonic() - started > seconds:
            break
    return step


@torch.no_grad()
def encode(vae: Any, pictures: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Each picture's posterior mean and std, in batches."""
    vae.eval()
    means, stds = [], []
    for i in range(0, len(pictures), 256):
        dist = vae.encode(to_unit(pictures[i : i + 256])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def embed(text_encoder: Any, tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """The text encoder's last hidden states, padded to the tokenizer's length exactly as the pipeline does."""
    out = []
    for i in range(0, len(captions), 256):
        ids = tokenizer(
            captions[i : i + 256],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        out.append(text_encoder(ids).last_hidden_state.half())
    return torch.cat(out)


def train_unet(
    unet: Any,
    latents: tuple[torch.Tensor, torch.Tensor],
    text: torch.Tensor,
    empty: torch.Tensor,
    *,
    steps: int,
    batch: int,
    seconds: float,
    seed: int,
    save: Any,
) -> int:
    """v-prediction MSE over uniform timesteps; `save(step)` every 500 steps and at the end."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**noise_schedule())
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.03)
    mean, std = latents
    started = time.monotonic()
    unet.train()
    step = 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(mean), (batch,), generator=generator)
        x0 = mean[idx]
        cond = text[idx].float()
        drop = torch.rand(batch, generator=generator) < 0.1
        cond[drop] = empty.float()
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        loss = nn.functional.mse_loss(unet(noisy, t, encoder_hidden_states=cond).sample, target)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            log.info("unet step %d loss %.4f (%.0f s)", step, loss.item(), time.monotonic() - started)
        over = time.monotonic() - started > seconds
        if step % 500 == 0 or step == steps or over:
            save(step)
        if over:
            break
    return step


def save_pipeline(out: Path, vae: Any, unet: Any, text_encoder: Any, tokenizer: Any) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    kind: Any = StableDiffusionPipeline
    pipe = kind(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**noise_schedule(), clip_sample=False, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)


def text_tower(scorer: Path) -> tuple[Any, Any]:
    """The scorer's tokenizer and its text transformer as a CLIPTextModel (frozen)."""
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(scorer)
    text_encoder = CLIPTextModel(clip.config.text_config)
    tower = getattr(text_encoder, "text_model", text_encoder)  # transformers 4 wraps the transformer, 5 does not
    tower.load_state_dict(clip.text_model.state_dict())
    return CLIPTokenizer.from_pretrained(scorer), text_encoder.eval().requires_grad_(False)


def first_stage(path: Path, pictures: np.ndarray, args: argparse.Namespace) -> Any:
    """The autoencoder at `path`, trained and saved there first unless it is there already."""
    from diffusers import AutoencoderKL

    if (path / "config.json").exists():
        log.info("using the autoencoder in %s", path)
        return AutoencoderKL.from_pretrained(path).eval()
    started = time.monotonic()
    vae = build_vae()
    steps = train_vae(vae, pictures, steps=args.vae_steps, batch=24, seconds=args.vae_minutes * 60, seed=args.seed)
    mean, _ = encode(vae, pictures)
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    vae.save_pretrained(path)
    (path.parent / "vae-training.json").write_text(
        json.dumps({"vae_steps": steps, "seconds": round(time.monotonic() - started)}) + "\n", encoding="utf-8"
    )
    log.info(
        "vae done after %d steps (%.0f s); scaling factor %.4f",
        steps,
        time.monotonic() - started,
        vae.config.scaling_factor,
    )
    return vae


def pictures_for(args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    """The training scenes' captions and pixels, kept in `--cache` (a .npz) between the two stages if given."""
    started = time.monotonic()
    captions = [s.caption for s in render.scenes(args.images, args.seed + 1, held_out=False)]
    if args.cache and args.cache.exists():
        return captions, np.load(args.cache)["pictures"]
    pictures = np.stack([np.asarray(im) for _, im in render.dataset(args.images, args.seed + 1)])
    log.info("rendered %d scenes (%.0f s)", len(pictures), time.monotonic() - started)
    if args.cache:
        np.savez(args.cache, pictures=pictures)
    return captions, pictures


def train(scorer: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    started = time.monotonic()
    tokenizer, text_encoder = text_tower(scorer)
    captions, pictures = pictures_for(args)
    vae = first_stage(out / "vae", pictures, args)
    mean, std = encode(vae, pictures)
    scale = vae.config.scaling_factor
    text = embed(text_encoder, tokenizer, captions)
    empty = embed(text_encoder, tokenizer, [""])[0]
    unet = build_unet(text_encoder.config.hidden_size)

    def save(step: int) -> None:
        save_pipeline(out, vae, unet.eval(), text_encoder, tokenizer)
        unet.train()
        log.info("saved the pipeline at unet step %d (%.0f s)", step, time.monotonic() - started)

    left = args.minutes * 60 - (time.monotonic() - started)
    unet_steps = train_unet(
        unet,
        (mean * scale, std * scale),
        text,
        empty,
        steps=args.unet_steps,
        batch=args.batch,
        seconds=left,
        seed=args.seed,
        save=save,
    )
    return {"images": args.images, "unet_steps": unet_steps, "seconds": round(time.monotonic() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scorer", type=Path, help="the trained scorer (its text tower conditions the UNet)")
    parser.add_argument("out", type=Path)
    budget: list[tuple[str, type[int] | type[float], float, str]] = [  # what a run renders, trains and spends
        ("--images", int, 12000, "scenes rendered for training"),
        ("--vae-steps", int, 1600, "autoencoder optimiser steps"),
        ("--vae-minutes", float, 10.0, "at most this long for the autoencoder"),
        ("--unet-steps", int, 3000, "UNet optimiser steps"),
        ("--batch", int, 32, "scenes per optimiser step"),
        ("--minutes", float, 45.0, "total wall time; the last checkpoint is kept"),
        ("--seed", int, 0, "seeds the scenes, the weights and the noise"),
    ]
    for flag, kind, default, text in budget:
        parser.add_argument(flag, type=kind, default=kind(default), help=text)
    parser.add_argument("--cache", type=Path, help="an .npz to keep the rendered scenes in between runs")
    parser.add_argument("--vae-only", action="store_true", help="train the autoencoder (into OUT/vae) and stop")
    parser.add_argument("--threads", type=int, default=1, help="1: on a loaded machine, 2 threads were 15x slower")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.vae_only:
        torch.manual_seed(args.seed)
        first_stage(args.out / "vae", pictures_for(args)[1], args)
        return
    result = train(args.scorer, args.out, args)
    (args.out / "training.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log.info("done: %s", result)


if __name__ == "__main__":
    main()

"""ONNX export of the three networks TensorRT compiles: text encoder(s), UNet (optionally with Q/DQ nodes from
modelopt) and VAE decoder, each with a dynamic batch axis and fixed everything else.

The TorchScript exporter (``dynamo=False``) is used: modelopt's quantisers export their Q/DQ pairs through
it, while the dynamo exporter stops on a data-dependent branch inside them. Opset 17 covers INT8 Q/DQ
(per-channel weights included); FP8 Q/DQ needs opset 19.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class UNetSpec:
    """The UNet's inputs at one resolution: what the export, the TensorRT profile and the runtime agree on."""

    latent_channels: int
    latent_height: int
    latent_width: int
    context_len: int  # 77 tokens
    context_dim: int  # cross-attention width (768 SD1.5, 1024 SD2, 2048 SDXL)
    text_embeds_dim: int = 0  # SDXL: pooled text embedding width (1280); 0 = no added conditions
    time_ids_dim: int = 0  # SDXL: 6

    @classmethod
    def of(cls, unet: torch.nn.Module, height: int, width: int, context_len: int = 77) -> UNetSpec:
        config: Any = unet.config  # diffusers' config of the UNet's init arguments
        factor = 2 ** (len(config.block_out_channels) - 1)  # not needed by the UNet, but sizes must divide
        latent_h, latent_w = height // 8, width // 8
        if latent_h % factor or latent_w % factor:
            raise ValueError(f"{width}x{height}: latent size must be a multiple of {factor} for this UNet")
        sdxl = config.addition_embed_type == "text_time"
        text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim if sdxl else 0
        return cls(
            config.in_channels,
            latent_h,
            latent_w,
            context_len,
            config.cross_attention_dim,
            text_embeds_dim=text_dim,
            time_ids_dim=6 if sdxl else 0,
        )

    @property
    def input_names(self) -> list[str]:
        extra = ["text_embeds", "time_ids"] if self.text_embeds_dim else []
        return ["sample", "timestep", "encoder_hidden_states", *extra]

    def shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Input shapes for ``batch`` UNet rows (with classifier-free guidance: twice the images)."""
        shapes = {
            "sample": (batch, self.latent_channels, self.latent_height, self.latent_width),
            "timestep": (batch,),
            "encoder_hidden_states": (batch, self.context_len, self.context_dim),
        }
        if self.text_embeds_dim:
            shapes["text_embeds"] = (batch, self.text_embeds_dim)
            shapes["time_ids"] = (batch, self.time_ids_dim)
        return shapes

    def random_inputs(
        self, batch: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> dict[str, torch.Tensor]:
        inputs = {
            name: torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
            for name, shape in self.shapes(batch).items()
        }
        inputs["timestep"] = torch.randint(1, 1000, (batch,), generator=generator).to(device, dtype)
        if self.time_ids_dim:
            inputs["time_ids"] = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * batch).to(device, dtype)
        return inputs


class UNetWrapper(torch.nn.Module):
    """Positional inputs and a plain tensor output, as ONNX export needs."""

    def __init__(self, unet: torch.nn.Module, spec: UNetSpec):
        super().__init__()
        self.unet, self.spec = unet, spec

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if self.spec.text_embeds_dim else None
        latent: torch.Tensor = self.unet(
            sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False
        )[0]
        return latent


class TextEncoderWrapper(torch.nn.Module):
    """token ids -> (hidden states the UNet attends to, pooled embedding). SDXL uses the penultimate layer."""

    def __init__(self, encoder: torch.nn.Module, penultimate: bool):
        super().__init__()
        self.encoder, self.penultimate = encoder, penultimate

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(input_ids, output_hidden_states=self.penultimate, return_dict=True)
        hidden = out.hidden_states[-2] if self.penultimate else out.last_hidden_state
        pooled = out.text_embeds if hasattr(out, "text_embeds") and out.text_embeds is not None else out.pooler_output
        return hidden, pooled


class VaeDecoderWrapper(torch.nn.Module):
    """Scaled latents -> image in [-1, 1]; the runtime divides by the VAE's scaling factor first."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae: Any = vae  # a diffusers AutoencoderKL: decode() is not nn.Module's

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image: torch.Tensor = self.vae.decode(latent, return_dict=False)[0]
        return image


@dataclass(frozen=True)
class Target:
    """How every network is exported: the ONNX opset, and the dtype and device of its example inputs."""

    opset: int = 17
    dtype: torch.dtype = torch.float32
    device: str = "cpu"


CPU = Target()


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes (static here)
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return path


def export_unet(unet: torch.nn.Module, spec: UNetSpec, path: Path, target: Target = CPU, *, batch: int = 2) -> Path:
    """Export the (possibly modelopt-quantised) UNet; ``batch`` is only the example batch (the axis is dynamic)."""
    wrapper = UNetWrapper(unet, spec)
    generator = torch.Generator().manual_seed(0)
    inputs = spec.random_inputs(batch, generator=generator, dtype=target.dtype, device=target.device)
    # modelopt's quantisers emit QuantizeLinear/DequantizeLinear pairs under torch.onnx.export by themselves.
    return _export(wrapper, tuple(inputs.values()), path, spec.input_names, ["latent"], target.opset)


def export_text_encoder(
    encoder: torch.nn.Module, path: Path, target: Target = CPU, *, penultimate: bool, context_len: int = 77
) -> Path:
    """The token ids are int32 whatever ``target.dtype`` says."""
    ids = torch.zeros((1, context_len), dtype=torch.int32, device=target.device)
    wrapper = TextEncoderWrapper(encoder, penultimate)
    return _export(wrapper, (ids,), path, ["input_ids"], ["hidden_states", "pooled"], target.opset)


def export_vae_decoder(
    vae: torch.nn.Module, path: Path, target: Target = CPU, *, latent_height: int, latent_width: int
) -> Path:
    config: Any = vae.config  # diffusers' config of the VAE's init arguments
    latent = torch.randn((1, config.latent_channels, latent_height, latent_width)).to(target.device, target.dtype)
    return _export(VaeDecoderWrapper(vae), (latent,), path, ["latent"], ["images"], target.opset)

"""Post-training quantisation of a diffusion UNet with nvidia-modelopt, following NVIDIA's INT8/FP8 recipe.

INT8 (what TensorRT runs fastest on Ampere/Hopper for SD-class UNets):

- Conv2d: weights INT8 per output channel; inputs INT8 per tensor with :class:`StepPercentileCalibrator`,
  which records the activation range at every denoising step, averages each step over the calibration
  prompts and keeps the smallest range among the first ``percentile`` of the steps. Early, high-noise
  steps have outliers that a plain max would let stretch the scale for every step.
- Linear (by ``quant_level``: 1 = none, 2 = feed-forward, 2.5 = + attention q/k/v, 3 = all): INT8 with
  SmoothQuant (``alpha`` migrates activation outliers into the weights), per-channel weights, per-tensor inputs.
- Kept in half precision: the time embedding and its projections, conv_in, conv_out, the residual
  shortcuts, the transformer in/out projections and the add/label embeddings, whose errors go straight to
  the output or into every block (:func:`is_sensitive`).

Calibration runs the real pipeline and scheduler over real prompts at the inference step count, so the
activations seen are those of actual sampling. The quantised UNet is then exported to ONNX with Q/DQ nodes
(``onnx_export.py``) for TensorRT's strongly typed build.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .recipe import quantised_layers

log = logging.getLogger(__name__)


try:  # modelopt is an optional dependency (pixelmill[gpu], and dev for the tests)
    from modelopt.torch.quantization.calib.max import MaxCalibrator
except ImportError:  # pragma: no cover - exercised only without modelopt
    MaxCalibrator = object


class StepPercentileCalibrator(MaxCalibrator):  # type: ignore[misc]  # modelopt is untyped: its base class is Any
    """Per-tensor activation range over the denoising steps (see the module docstring).

    The UNet is called once per step (classifier-free guidance batches both halves into one call), so the
    call count modulo ``steps`` is the step index.
    """

    def __init__(
        self,
        num_bits: int = 8,
        axis: Any = None,
        unsigned: bool = False,
        track_amax: bool = False,
        *,
        steps: int,
        percentile: float = 1.0,
        **_: Any,
    ):
        super().__init__(num_bits, axis, unsigned, track_amax)
        if steps < 1 or not 0 < percentile <= 1:
            raise ValueError(f"need steps >= 1 and 0 < percentile <= 1, got {steps}, {percentile}")
        self.steps, self.percentile = steps, percentile
        self._sums: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}
        self._calls = 0

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:
        amax = x.detach().abs().amax().float()
        if x.device.type == "meta":  # modelopt initialises on meta tensors
            self._calib_amax = amax
            return
        step = self._calls % self.steps
        self._sums[step] = self._sums.get(step, 0) + amax
        self._counts[step] = self._counts.get(step, 0) + 1
        self._calls += 1

    def compute_amax(self) -> torch.Tensor | None:
        if not self._sums:
            return self._calib_amax
        kept = max(1, round(self.steps * self.percentile))
        means = [self._sums[s] / self._counts[s] for s in sorted(self._sums)[:kept]]
        self._calib_amax = torch.stack(means).min()
        return self._calib_amax

    def reset(self) -> None:
        super().reset()
        self._sums, self._counts, self._calls = {}, {}, 0


def quant_config(
    unet: torch.nn.Module,
    precision: str = "int8",
    *,
    level: float = 2.5,
    steps: int = 30,
    percentile: float = 1.0,
    alpha: float = 1.0,
) -> dict[str, Any]:
    """The modelopt config: everything disabled, then the recipe's layers enabled by exact module name."""
    names = quantised_layers(unet, level)
    modules = dict(unet.named_modules())
    entries: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    if precision == "int8":
        calibrator = (
            StepPercentileCalibrator,
            (),
            {"num_bits": 8, "axis": None, "steps": steps, "percentile": percentile},
        )
        for name in names:
            entries.append({"quantizer_name": f"{name}.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}})
            if isinstance(modules[name], torch.nn.Conv2d):
                cfg = {"num_bits": 8, "axis": None, "calibrator": calibrator}
            else:  # SmoothQuant collects per-channel ranges, then quantises per tensor
                cfg = {"num_bits": 8, "axis": None}
            entries.append({"quantizer_name": f"{name}.input_quantizer", "cfg": cfg})
        algorithm: Any = {"method": "smoothquant", "alpha": alpha}
    elif precision == "fp8":
        for name in names:
            for quantizer in ("weight_quantizer", "input_quantizer"):
                entries.append({"quantizer_name": f"{name}.{quantizer}", "cfg": {"num_bits": (4, 3), "axis": None}})
        algorithm = "max"
    else:
        raise ValueError(f"modelopt precision must be int8 or fp8, got {precision!r}")
    return {"quant_cfg": entries, "algorithm": algorithm}


def calibration_loop(
    pipe: Any,
    prompts: Sequence[str],
    *,
    steps: int,
    guidance: float,
    width: int,
    height: int,
    batch: int = 2,
    seed: int = 0,
) -> Callable[[torch.nn.Module], None]:
    """A modelopt ``forward_loop``: runs ``pipe`` (which holds the UNet being calibrated) over the prompts; an
    inpainting UNet (9 input channels) over product photos too (`calibration_photos`)."""
    if not prompts:
        raise ValueError("no calibration prompts")

    # What every batch shares, as `TorchEngine.generate` passes it; the latents are all calibration needs.
    common = dict(num_inference_steps=steps, guidance_scale=guidance, width=width, height=height, output_type="latent")
    inpaint = pipe.unet.config.in_channels == 9  # an inpainting UNet sees a mask and a masked photo as well
    if inpaint:  # the inpainting pipeline over the same modules (the UNet being calibrated), as background mode runs
        from diffusers import AutoPipelineForInpainting

        pipe = AutoPipelineForInpainting.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)

    def loop(_unet: torch.nn.Module) -> None:
        generator = torch.Generator("cpu").manual_seed(seed)
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start : start + batch])
            photos: dict[str, Any] = {}
            if inpaint:
                images, masks = calibration_photos(len(chunk), width, height, seed=seed + start)
                photos = {"image": images, "mask_image": masks, "strength": 1.0}
            pipe(prompt=chunk, negative_prompt=[""] * len(chunk), generator=generator, **common, **photos)

    return loop


def calibration_photos(count: int, width: int, height: int, *, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Product photos for calibrating an inpainting UNet, as background mode feeds it (worker/photos.py): a simple
    product (an ellipse or a box in a random colour) centred on white, and the mask of what is repainted (white:
    everything but the product)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images, masks = [], []
    for _ in range(count):
        w, h = rng.randint(width // 4, width * 3 // 4), rng.randint(height // 4, height * 3 // 4)
        box = ((width - w) // 2, (height - h) // 2, (width + w) // 2, (height + h) // 2)
        image, mask = Image.new("RGB", (width, height), "white"), Image.new("L", (width, height), 255)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw = ImageDraw.Draw(image).ellipse if rng.random() < 0.5 else ImageDraw.Draw(image).rectangle
        draw(box, fill=colour)
        (ImageDraw.Draw(mask).ellipse if draw.__name__ == "ellipse" else ImageDraw.Draw(mask).rectangle)(box, fill=0)
        images.append(image)
        masks.append(mask)
    return images, masks


def quantise(
    pipe: Any,
    prompts: Sequence[str],
    *,
    precision: str = "int8",
    steps: int = 30,
    guidance: float = 7.5,
    width: int = 512,
    height: int = 512,
    level: float = 2.5,
    alpha: float = 1.0,
    percentile: float = 1.0,
    batch: int = 2,
) -> torch.nn.Module:
    """Calibrate ``pipe.unet`` in place with modelopt and return it (now holding fake-quant modules)."""
    import modelopt.torch.quantization as mtq

    unet: torch.nn.Module = pipe.unet
    config = quant_config(unet, precision, level=level, steps=steps, percentile=percentile, alpha=alpha)
    loop = calibration_loop(pipe, prompts, steps=steps, guidance=guidance, width=width, height=height, batch=batch)
    with torch.no_grad(), warnings.catch_warnings():
        # SmoothQuant visits every Linear; the ones the recipe leaves unquantised are "not calibrated": expected.
        warnings.filterwarnings("ignore", message=".* is not calibrated, skip smoothing")
        mtq.quantize(unet, config, forward_loop=loop)
    log.info(
        "UNet calibrated",
        extra={
            "precision": precision,
            "layers": len(quantised_layers(unet, level)),
            "prompts": len(prompts),
            "steps": steps,
        },
    )
    return unet

"""The PyTorch/diffusers engine: one pipeline, one batched call per request.

Imported lazily (see ``worker.engine.load_engine``) because importing torch in the Celery parent
would initialise CUDA before fork.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from .interface import Request, Result, default_device
from .lora import FusedLoras, LoraSwitch

if TYPE_CHECKING:
    import PIL.Image

    from contract.settings import Settings

log = logging.getLogger(__name__)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Loading a pipeline draws diffusers' and transformers' progress bars ("Loading pipeline components", "Loading
# weights") into every worker's log and terminal; the worker logs the load itself ("base model loaded").
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()


class TorchEngine:
    """Runs a diffusers text-to-image pipeline loaded from a local directory or a hub id.

    Loading goes through ``AutoPipelineForText2Image.from_pretrained``, the same call a real
    Stable Diffusion or SDXL checkpoint uses, so the tiny CI model and production checkpoints share
    every code path. fp16 (or bf16) on CUDA, fp32 on CPU (CPU half precision is slow and poorly
    supported). On CUDA: SDPA attention (diffusers' default on torch 2), channels_last UNet and VAE,
    fused QKV projections, and optionally ``torch.compile`` and torchao INT8/FP8 quantisation of the UNet.
    The engine id names every option applied, e.g. ``torch-fp16-cuda+int8+compile``.
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        *,
        dtype: str = "fp16",
        compile: bool = False,
        quant: str = "none",
        pipeline: DiffusionPipeline | None = None,
    ):
        self.model = model
        self.device = torch.device(device or default_device())
        cuda = self.device.type == "cuda"
        if quant not in ("none", "int8", "fp8"):
            raise ValueError(f"torch quantisation must be none, int8 or fp8, got {quant!r}")
        if quant == "fp8" and not (cuda and torch.cuda.get_device_capability(self.device) >= (8, 9)):
            raise ValueError("PIXELMILL_TORCH_QUANT=fp8 needs a CUDA GPU of compute capability 8.9 or later")
        self.dtype = DTYPES[dtype] if cuda else torch.float32
        precision = {v: k for k, v in DTYPES.items()}[self.dtype]
        # ``pipeline``: an already built one (the benchmark's random-weight models), else loaded from ``model``.
        # Any: a pipeline's components (unet, vae, ...) and its __call__ exist only at runtime.
        started = time.perf_counter()
        pipe: Any = pipeline if pipeline is not None else self._load(model, self.dtype)
        if pipeline is None:  # once per worker process and model: switching LoRAs never gets here (tests count it)
            log.info("base model loaded", extra={"model": model, "seconds": round(time.perf_counter() - started, 3)})
        self.pipe = pipe
        self._photo_pipes: dict[str, Any] = {}  # inpaint / img2img pipelines sharing `pipe`'s components
        optimised = (compile or quant != "none") and getattr(self.pipe, "unet", None) is not None
        # A quantised or compiled UNet takes a LoRA fused into a copy of it as loaded (worker/engine/lora.py): that
        # copy is kept in host memory, one UNet's worth, only while such an engine lives. Copied before the move to
        # the device, so the GPU never holds the UNet twice.
        pristine = copy.deepcopy(self.pipe.unet).to("cpu") if optimised else None
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        # SD 1.x/2.x split cleanly into timed stages; others (e.g. SDXL) run as one call.
        self.split_stages = isinstance(self.pipe, StableDiffusionPipeline)
        options = optimise(self.pipe, cuda=cuda, compile=compile, quant=quant)
        self.engine_id = "+".join([f"torch-{precision}-{self.device.type}", *options])
        self.loras: LoraSwitch | FusedLoras = LoraSwitch(self.pipe, model=model)
        if pristine is not None:

            def optimise_copy(unet: Any) -> Any:
                unet = unet.to(self.device, self.dtype)
                return optimise_unet(unet, cuda=cuda, compile=compile, quant=quant)[0]

            self.loras = FusedLoras(self.pipe, pristine, optimise_copy, model=model, pipes=self._photo_pipes)

    @classmethod
    def from_settings(cls, model: str, settings: Settings, device: str | None = None) -> TorchEngine:
        return cls(
            model, device=device, dtype=settings.torch_dtype, compile=settings.torch_compile, quant=settings.torch_quant
        )

    @staticmethod
    def _load(model: str, dtype: torch.dtype) -> DiffusionPipeline:
        kwargs: dict[str, Any] = {}
        # The NSFW checker would blank images and needs a second model; the service does not use it.
        # Only pipelines that declare the component accept the override.
        if "safety_checker" in DiffusionPipeline.load_config(model):
            kwargs["safety_checker"] = None
        with warnings.catch_warnings():
            # diffusers 0.42 renamed torch_dtype to dtype, which older releases (>= 0.31 is supported)
            # do not accept; torch_dtype works in all of them, so keep it and mute the rename notice.
            warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
            # from_pretrained returns modules in eval mode already.
            pipe: DiffusionPipeline = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=dtype, **kwargs)
            return pipe

    def __repr__(self) -> str:
        return f"TorchEngine(model={self.model!r}, engine_id={self.engine_id!r})"

    @torch.inference_mode()
    def generate(self, request: Request) -> Result:
        """Generate the whole batch in one pipeline call.

        Each item gets its own ``torch.Generator`` seeded with its own seed, so its initial noise --
        and hence its image -- depends only on its own seed and prompt, never on its batch
        neighbours. Stable Diffusion pipelines are split into text / denoise / decode for timings;
        other pipelines (e.g. SDXL, which also needs pooled embeddings) run as one timed call.
        """
        request.validate()
        self.loras.apply(request)
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in request.seeds]
        if request.mode != "text":
            return self._generate_photos(request, generators)
        if self.pipe.unet.config.in_channels != 4:
            raise ValueError(
                f"model {self.model!r} has a {self.pipe.unet.config.in_channels}-channel UNet (an inpainting model): "
                "it makes background-mode items only"
            )
        common = dict(
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            num_images_per_prompt=1,
            generator=generators,
        )
        start = self._clock()
        if self.split_stages:
            images, timings = self._generate_sd(request, common)
        else:
            images, timings = self._generate_whole(request, common)
        timings["total"] = self._clock() - start
        return Result(images=[image.convert("RGB") for image in images], timings=timings)

    def _derived(self, kind: str) -> Any:
        """The inpainting or img2img pipeline made from this engine's own components (no second copy of the
        weights), built once. A 9-channel inpainting model is its own inpainting pipeline."""
        found = self._photo_pipes.get(kind)
        if found is None:
            auto = AutoPipelineForInpainting if kind == "inpaint" else AutoPipelineForImage2Image
            found = auto.from_pipe(self.pipe)
            found.set_progress_bar_config(disable=True)
            self._photo_pipes[kind] = found
        return found

    def _generate_photos(self, request: Request, generators: list[torch.Generator]) -> Result:
        """Background (inpaint outside the product; the worker composites the product back) or restyle (img2img
        at the request's strength), one pipeline call, timed as a whole."""
        start = self._clock()
        common: dict[str, Any] = dict(
            prompt=request.prompts,
            negative_prompt=request.negatives,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=generators,
        )
        if request.mode == "background":
            pipe = self._derived("inpaint")
            image: Any = request.images
            if self.pipe.unet.config.in_channels == 4:
                image = common["masked_image_latents"] = self._photo_latents(pipe, request)
            images = pipe(
                image=image,
                mask_image=request.masks,
                width=request.width,
                height=request.height,
                strength=1.0,
                **common,
            ).images
        else:
            if self.pipe.unet.config.in_channels != 4:
                raise ValueError(f"model {self.model!r} is an inpainting model: restyle needs a text-to-image model")
            # img2img denoises int(steps x strength) of the schedule's steps: at least one, however few were asked.
            strength = request.strength if request.strength is not None else 0.6
            common["num_inference_steps"] = max(request.steps, math.ceil(1 / strength))
            images = self._derived("img2img")(image=request.images, strength=strength, **common).images
        return Result(images=[image.convert("RGB") for image in images], timings={"total": self._clock() - start})

    def _photo_latents(self, pipe: Any, request: Request) -> torch.Tensor:
        """The photos' latents for a 4-channel UNet's inpainting, encoded in one batched VAE call (the latent
        mean: the product area is composited back from the photo's own pixels anyway). Given as latents, they
        spare the pipeline its per-image encodes, and as the masked photo's latents (which a 4-channel UNet never
        reads) a second encode of every photo: background mode's whole overhead on a small model."""
        pixels = pipe.image_processor.preprocess(request.images, height=request.height, width=request.width)
        encoded = pipe.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.mode()
        latents: torch.Tensor = encoded * pipe.vae.config.scaling_factor
        return latents

    def _generate_whole(
        self, request: Request, common: dict[str, Any]
    ) -> tuple[list[PIL.Image.Image], dict[str, float]]:
        """One plain pipeline call; only the total is timed.

        Negatives are always passed as strings, "" included: SDXL would use zero embeddings for a
        missing negative, but one list cannot mix None and text, and an item's image must not
        depend on whether its neighbours have negatives.
        """
        images = self.pipe(prompt=request.prompts, negative_prompt=request.negatives, **common).images
        return images, {}

    def _generate_sd(self, request: Request, common: dict[str, Any]) -> tuple[list[PIL.Image.Image], dict[str, float]]:
        """Run SD 1.x/2.x as encode_prompt -> pipeline(latents) -> VAE decode, timing each stage."""
        pipe = self.pipe
        start = self._clock()
        # The pipeline's own rule for classifier-free guidance (guidance-distilled UNets skip it).
        do_cfg = request.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            request.prompts,
            self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=request.negatives,
        )
        text_done = self._clock()

        latents = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            output_type="latent",
            **common,
        ).images
        denoise_done = self._clock()

        vae = pipe.vae
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(decoded, output_type="pil")
        decode_done = self._clock()
        timings = {
            "text": text_done - start,
            "denoise": denoise_done - text_done,
            "decode": decode_done - denoise_done,
        }
        return images, timings

    def _clock(self) -> float:
        """Wall clock after all queued GPU work has finished (CUDA kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def optimise(pipe: Any, *, cuda: bool, compile: bool = False, quant: str = "none") -> list[str]:
    """Apply the torch-side speed-ups to ``pipe`` in place; return the names of the optional ones applied.

    Order matters: QKV fusion before quantisation (one int8 GEMM instead of three), quantisation before
    compilation (the compiled graph must see the quantised modules). Fusion changes float summation order
    only, so it is always on; it is not in the engine id.
    """
    vae = getattr(pipe, "vae", None)
    if cuda and vae is not None:
        vae.to(memory_format=torch.channels_last)  # NHWC lets cuDNN pick its fastest half-precision kernels
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return []
    optimised, applied = optimise_unet(unet, cuda=cuda, compile=compile, quant=quant)
    if optimised is not unet:
        pipe.unet = optimised
    return applied


def optimise_unet(unet: Any, *, cuda: bool, compile: bool = False, quant: str = "none") -> tuple[Any, list[str]]:
    """`optimise`'s UNet part (a LoRA's fused copy gets the same, worker/engine/lora.py): the UNet to run (compiled,
    or `unet` changed in place) and the names of the optional speed-ups applied."""
    applied: list[str] = []
    if hasattr(unet, "fuse_qkv_projections"):
        unet.fuse_qkv_projections()
    if cuda:
        unet.to(memory_format=torch.channels_last)
    if quant != "none":
        quantise_unet(unet, quant)
        applied.append(quant)
    if compile:
        # max-autotune-no-cudagraphs: the CUDA graphs of "max-autotune" would pin one batch size per graph
        # and keep their memory; fullgraph: fail loudly on a graph break instead of running half compiled.
        mode = "max-autotune-no-cudagraphs" if cuda else "default"
        unet = torch.compile(unet, mode=mode, fullgraph=True)
        applied.append("compile")
    return unet, applied


def quantise_unet(unet: torch.nn.Module, quant: str) -> None:
    """torchao: INT8 dynamic activations x INT8 weights, or FP8 (e4m3, per-row scales) on Hopper/Ada.

    Only Linear layers are converted (torchao's configs target Linear): in an SD UNet that is attention
    and feed-forward, about half of its FLOPs; convolutions stay in half precision. The first/last layers and
    the time embedding are left alone, as in NVIDIA's INT8 recipe (see calibrate.py).
    """
    from torchao.quantization import quantize_

    from .recipe import is_sensitive

    if quant == "int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        config = Int8DynamicActivationInt8WeightConfig()
    elif quant == "fp8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        raise ValueError(f"unknown quantisation {quant!r}")

    def wanted(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and not is_sensitive(name)

    quantize_(unet, config, filter_fn=wanted)

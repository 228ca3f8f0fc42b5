"""The PyTorch/diffusers engine: one pipeline, one batched call per request.

Imported lazily (see ``worker.engine.load_engine``) because importing torch in the Celery parent
would initialise CUDA before fork.
"""

from __future__ import annotations

import time
import warnings

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline, StableDiffusionPipeline

from . import Request, Result, default_device


class TorchEngine:
    """Runs a diffusers text-to-image pipeline loaded from a local directory or a hub id.

    Loading goes through ``AutoPipelineForText2Image.from_pretrained``, the same call a real
    Stable Diffusion or SDXL checkpoint uses, so the tiny CI model and production checkpoints share
    every code path. fp16 on CUDA (halves memory and uses tensor cores), fp32 on CPU (CPU fp16 is
    slow and poorly supported).
    """

    def __init__(self, model: str, device: str | None = None):
        self.model = model
        self.device = torch.device(device or default_device())
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        precision = {torch.float16: "fp16", torch.float32: "fp32"}[self.dtype]
        self.engine_id = f"torch-{precision}-{self.device.type}"

        kwargs = {}
        # The NSFW checker would blank images and needs a second model; the service does not use it.
        # Only pipelines that declare the component accept the override.
        if "safety_checker" in DiffusionPipeline.load_config(model):
            kwargs["safety_checker"] = None
        with warnings.catch_warnings():
            # diffusers 0.42 renamed torch_dtype to dtype, which older releases (>= 0.31 is supported)
            # do not accept; torch_dtype works in all of them, so keep it and mute the rename notice.
            warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
            # from_pretrained returns modules in eval mode already.
            self.pipe = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=self.dtype, **kwargs)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        # SD 1.x/2.x split cleanly into timed stages; others (e.g. SDXL) run as one call.
        self.split_stages = isinstance(self.pipe, StableDiffusionPipeline)
        if self.device.type == "cuda" and getattr(self.pipe, "unet", None) is not None:
            # NHWC lets cuDNN pick its fastest fp16 convolution kernels.
            self.pipe.unet.to(memory_format=torch.channels_last)

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
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in request.seeds]
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

    def _generate_whole(self, request: Request, common: dict) -> tuple[list, dict[str, float]]:
        """One plain pipeline call; only the total is timed.

        Negatives are always passed as strings, "" included: SDXL would use zero embeddings for a
        missing negative, but one list cannot mix None and text, and an item's image must not
        depend on whether its neighbours have negatives.
        """
        images = self.pipe(prompt=request.prompts, negative_prompt=request.negatives, **common).images
        return images, {}

    def _generate_sd(self, request: Request, common: dict) -> tuple[list, dict[str, float]]:
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

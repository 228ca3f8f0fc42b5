"""The TensorRT engine: text encoder(s), UNet and VAE decoder as TensorRT plans from the engine cache, with
the diffusers scheduler loop on torch CUDA tensors in between.

Every plan runs with ``execute_async_v3`` on the current torch stream, reading and writing torch tensors in
place (``set_tensor_address``), so no copies between torch and TensorRT. The UNet, called ``steps`` times per
batch, runs as one CUDA graph per static batch size: inputs are copied into fixed buffers and the captured
launch is replayed, which removes TensorRT's per-call CPU overhead (significant at small batches).

A request whose size or batch no build covers goes to a torch pipeline loaded on first need; its images
record the torch engine id. Written to TensorRT 10's documented API; never run in this project's CI.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .cache import EngineCache, Manifest
from .interface import Request, Result
from .onnx_export import UNetSpec
from .trt_build import import_tensorrt

if TYPE_CHECKING:
    from .torch_engine import TorchEngine

log = logging.getLogger(__name__)


class TrtModule:
    """One deserialized plan with its execution context; call with named torch CUDA tensors."""

    def __init__(self, plan: Path, trt: Any, runtime: Any):
        self.trt = trt
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {plan} (built by another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.graphs: dict[
            tuple[tuple[int, ...], ...], tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], dict[str, torch.Tensor]]
        ] = {}

    def _dtype(self, name: str) -> torch.dtype:
        trt = self.trt
        return {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.bfloat16: torch.bfloat16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
        }[self.engine.get_tensor_dtype(name)]

    def _bind(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            tensor = inputs[name].to(self._dtype(name)).contiguous()
            inputs[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtype(name), device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        return outputs

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = dict(inputs)
        outputs = self._bind(inputs)
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs

    def graphed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Like calling it, through a CUDA graph captured once per set of input shapes."""
        key = tuple(tuple(inputs[n].shape) for n in self.inputs)
        if key not in self.graphs:
            static_in = {n: inputs[n].to(self._dtype(n)).clone().contiguous() for n in self.inputs}
            static_out = self._bind(static_in)
            stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch leaves Stream.__new__ unannotated
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # one plain run first: TensorRT allocates lazily on first use
                self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                self.context.execute_async_v3(stream.cuda_stream)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        for name in self.inputs:
            static_in[name].copy_(inputs[name])
        graph.replay()
        return static_out


class TensorRTEngine:
    """Implements the Engine protocol over the builds the engine cache holds for this model and GPU."""

    def __init__(self, model: str, manifests: list[Manifest], cache: EngineCache, settings: Any = None):
        from diffusers import DiffusionPipeline

        trt = import_tensorrt()
        if not manifests:
            raise ValueError("no engine builds given")
        self.model, self.settings = model, settings
        self.device = torch.device("cuda")
        self.trt, self.runtime = trt, trt.Runtime(trt.Logger(trt.Logger.WARNING))
        # Prefer INT8, then FP8, then FP16 builds where several cover a shape.
        order = {"int8": 0, "fp8": 1, "fp16": 2}
        self.builds = sorted(manifests, key=lambda m: (order.get(m.key.precision, 9), m.key.batch_max))
        self.engine_id = self.build_id(self.builds[0])
        self._modules: dict[tuple[str, str], TrtModule] = {}
        self._dirs = {m.key.digest(): cache.directory(m.key) for m in self.builds}
        # Tokenizers, scheduler and configs only: no torch weights of the networks TensorRT runs.
        import diffusers
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.image_processor import VaeImageProcessor
        from transformers import AutoTokenizer

        index = DiffusionPipeline.load_config(model)
        self.scheduler = getattr(diffusers, index["scheduler"][1]).from_pretrained(model, subfolder="scheduler")
        self.tokenizers = {
            name: AutoTokenizer.from_pretrained(model, subfolder=f"tokenizer{suffix}")
            for name, suffix in (("text_encoder", ""), ("text_encoder_2", "_2"))
            if f"tokenizer{suffix}" in index
        }
        self.unet_config = UNet2DConditionModel.load_config(model, subfolder="unet")
        self.vae_config = AutoencoderKL.load_config(model, subfolder="vae")
        self.image_processor = VaeImageProcessor(vae_scale_factor=2 ** (len(self.vae_config["block_out_channels"]) - 1))
        self.sdxl = self.unet_config.get("addition_embed_type") == "text_time"
        self._fallback: TorchEngine | None = None

    @staticmethod
    def build_id(manifest: Manifest) -> str:
        return f"trt-{manifest.key.precision}-{manifest.key.gpu}-{manifest.short_id}"

    def __repr__(self) -> str:
        return f"TensorRTEngine(model={self.model!r}, engine_id={self.engine_id!r})"

    def _module(self, manifest: Manifest, name: str) -> TrtModule:
        key = (manifest.key.digest(), name)
        if key not in self._modules:
            plan = self._dirs[manifest.key.digest()] / manifest.components[name]["plan"]
            self._modules[key] = TrtModule(plan, self.trt, self.runtime)
        return self._modules[key]

    def _build_for(self, request: Request) -> Manifest | None:
        """A build for this size and batch with the request's LoRA fused in (or none, for a request without one or
        at scale 0): a TensorRT engine has its weights built in, so each (LoRA, scale) is a build of its own."""
        n = len(request.prompts)
        lora = None
        if request.lora is not None and request.lora_scale != 0 and request.lora_sha256 is not None:
            lora = (request.lora_sha256, request.lora_scale)
        return next((m for m in self.builds if m.key.serves(request.width, request.height, n, lora)), None)

    def generate(self, request: Request) -> Result:
        request.validate()
        # Photo rows, and LoRAs no build has fused in: torch's pipelines.
        build = self._build_for(request) if request.mode == "text" else None
        if build is None:
            return self._generate_torch(request)
        return self._generate_trt(request, build)

    def _generate_torch(self, request: Request) -> Result:
        if self._fallback is None:
            from .torch_engine import TorchEngine

            log.warning(
                "no TensorRT build covers this shape or mode; using torch for it",
                extra={"model": self.model, "size": f"{request.width}x{request.height}", "batch": len(request.prompts)},
            )
            self._fallback = (
                TorchEngine.from_settings(self.model, self.settings, device="cuda")
                if self.settings is not None
                else TorchEngine(self.model, device="cuda")
            )
        result = self._fallback.generate(request)
        result.engine_id = self._fallback.engine_id
        return result

    def _encode(self, build: Manifest, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, pooled = [], None
        for name, tokenizer in self.tokenizers.items():
            ids = tokenizer(
                texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device, torch.int32)
            out = self._module(build, name)({"input_ids": ids})
            hidden.append(out["hidden_states"])
            pooled = out["pooled"]  # SDXL: the second encoder's projected pooled output
        return torch.cat(hidden, dim=-1), pooled

    @torch.inference_mode()
    def _generate_trt(self, request: Request, build: Manifest) -> Result:
        clock = _Clock()
        n = len(request.prompts)
        cfg = request.guidance > 1 and self.unet_config.get("time_cond_proj_dim") is None
        texts = list(request.prompts) + (list(request.negatives) if cfg else [])
        context, pooled = self._encode(build, texts)
        t_text = clock.lap()

        spec = UNetSpec(**build.components["unet"]["spec"])
        scheduler = self.scheduler
        scheduler.set_timesteps(request.steps, device=self.device)
        shape = (1, spec.latent_channels, spec.latent_height, spec.latent_width)
        # Per-item generators, as the torch engine: an image depends only on its own seed.
        latents = torch.cat(
            [
                torch.randn(
                    shape,
                    generator=torch.Generator(self.device).manual_seed(s),
                    device=self.device,
                    dtype=torch.float32,
                )
                for s in request.seeds
            ]
        )
        latents = latents * scheduler.init_noise_sigma
        unet = self._module(build, "unet")
        extra: dict[str, torch.Tensor] = {}
        if self.sdxl:
            assert pooled is not None  # SDXL's second text encoder gives the pooled embedding
            time_ids = torch.tensor(
                [request.height, request.width, 0, 0, request.height, request.width],
                device=self.device,
                dtype=torch.float32,
            )
            extra = {"text_embeds": pooled, "time_ids": time_ids.repeat(context.shape[0], 1)}
        for t in scheduler.timesteps:
            model_in = torch.cat([latents, latents]) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            timestep = t.to(torch.float32).expand(model_in.shape[0])
            noise = unet.graphed({"sample": model_in, "timestep": timestep, "encoder_hidden_states": context, **extra})[
                "latent"
            ].float()
            if cfg:
                cond, uncond = noise[:n], noise[n:]
                noise = uncond + request.guidance * (cond - uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        t_denoise = clock.lap()

        scaling = self.vae_config.get("scaling_factor", 0.18215)
        images = self._module(build, "vae_decoder")({"latent": latents / scaling})["images"].float()
        pil = self.image_processor.postprocess(images, output_type="pil")
        t_decode = clock.lap()
        timings = {"text": t_text, "denoise": t_denoise, "decode": t_decode, "total": t_text + t_denoise + t_decode}
        build_id = self.build_id(build)
        return Result(
            images=[image.convert("RGB") for image in pil],
            timings=timings,
            engine_id=None if build_id == self.engine_id else build_id,
        )


class _Clock:
    def __init__(self) -> None:
        torch.cuda.synchronize()
        self.last = time.perf_counter()

    def lap(self) -> float:
        torch.cuda.synchronize()
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed

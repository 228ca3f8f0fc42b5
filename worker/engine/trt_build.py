"""TensorRT engine builds from the exported ONNX files (TensorRT 10 Python API, import-guarded).

Strongly typed networks: the precision of every layer is the one in the ONNX graph (fp16 tensors, INT8/FP8
Q/DQ pairs from modelopt), so no precision flags are set and TensorRT cannot silently fall back to other
types. One optimisation profile spans the batch range (min, opt, max); the resolution is static.

Never run in this project's CI (TensorRT cannot be installed there); written to the documented API.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TensorRTMissing(RuntimeError):
    """Raised where a build or a runtime needs TensorRT and it does not import."""


def import_tensorrt() -> Any:  # the tensorrt module (untyped)
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 (ImportError, or a stub whose import fails)
        raise TensorRTMissing(
            f"TensorRT does not import here ({exc}); build engines on a GPU host with "
            "TensorRT 10 (e.g. the NGC worker image)"
        ) from exc
    return trt


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    shapes: dict[str, tuple[tuple[int, ...], ...]],
    *,
    optimisation_level: int = 3,
    workspace_gib: float = 16.0,
) -> Path:
    """Compile ``onnx_path`` to a serialized plan.

    ``shapes`` maps each input name to its (min, opt, max) shapes for the one optimisation profile.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.builder_optimization_level = optimisation_level
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    log.info("building TensorRT engine", extra={"onnx": str(onnx_path), "level": optimisation_level})
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {onnx_path} (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def profile_shapes(
    shapes_at: Mapping[int, Mapping[str, tuple[int, ...]]], batch_min: int, batch_opt: int, batch_max: int
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per input from a function of the batch: ``shapes_at[b][name]``."""
    return {
        name: (shapes_at[batch_min][name], shapes_at[batch_opt][name], shapes_at[batch_max][name])
        for name in shapes_at[batch_min]
    }

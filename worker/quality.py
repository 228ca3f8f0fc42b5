"""Cheap technical scores of a product photo, from pixels alone (numpy on the CPU, no model)."""

from __future__ import annotations

from typing import Any

import numpy as np

# ITU-R BT.601 luma, the weights PIL's "L" mode uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def technical_scores(image: Any) -> dict[str, float]:
    """Sharpness, exposure, clipping and white-background fraction of one RGB image."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    grey = rgb @ _LUMA
    # 4-neighbour Laplacian over the interior; its variance is the classic focus measure.
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    low, high = rgb.min(axis=2), rgb.max(axis=2)
    return {
        "sharpness": float(lap.var()) if lap.size else 0.0,
        "exposure": float(grey.mean() / 255.0),
        "clipped_dark": float((grey <= 2.0).mean()),
        "clipped_light": float((grey >= 253.0).mean()),
        # near-white and nearly grey: every channel >= 235 and channels within 12 of each other
        "white_background": float(((low >= 235.0) & (high - low <= 12.0)).mean()),
    }

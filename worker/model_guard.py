"""A worker serves only the model it was started with."""

from __future__ import annotations

from contract.identity import resolve_model
from contract.settings import Settings


def foreign_model(settings: Settings, model: str) -> str | None:
    """Why this worker refuses a job's model, or None when it is the model the worker serves."""
    served = resolve_model(settings.default_model)
    if model == served:
        return None
    return (
        f"this worker serves model {served!r} only (PIXELMILL_MODEL / --model) and refuses chunks for model "
        f"{model!r}; the item goes back to that model's queue"
    )

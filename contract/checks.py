"""What a job asks of every image after generation: the safety check, the scores and the quality gate.

Resolved from settings (and `submit` options) once, at submission, and stored on the job: a worker applies
the job's checks, never its own defaults, so the ledger says exactly how each image was judged. Pure data
and arithmetic; workers import the torch models that compute the scores (worker/image_checks.py).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from contract.identity import offset_seed
from contract.settings import Settings

NONE = "none"

# Scores a gate may name. clip_score and aesthetic exist only when their models are configured.
SCORES = {
    "clip_score": "prompt-image alignment, 100 x cosine of CLIP embeddings (clamped at 0)",
    "aesthetic": "LAION-style aesthetic predictor over the CLIP image embedding (about 1-10)",
    "sharpness": "variance of the Laplacian of the grey image (higher: sharper)",
    "exposure": "mean luminance, 0 (black) to 1 (white)",
    "clipped_dark": "fraction of pixels crushed to black (luminance <= 2/255)",
    "clipped_light": "fraction of pixels blown to white (luminance >= 253/255)",
    "white_background": "fraction of near-white, unsaturated pixels (product shots on white)",
}
MODEL_SCORES = {"clip_score": "clip_model", "aesthetic": "aesthetic_head"}

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_TERM = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


class ChecksError(ValueError):
    """A check setting is unusable; the message names the variable or option."""


@dataclass(frozen=True)
class Threshold:
    score: str
    op: str
    value: float

    def holds(self, scores: Mapping[str, float]) -> bool:
        return self.score in scores and _OPS[self.op](scores[self.score], self.value)

    def __str__(self) -> str:
        return f"{self.score}{self.op}{self.value:g}"


def parse_gate(spec: str, *, name: str = "PIXELMILL_GATE") -> list[Threshold]:
    """`"clip_score>=28, aesthetic>=5.5"` -> thresholds; an empty spec is no gate."""
    thresholds = []
    for term in filter(None, (t.strip() for t in spec.split(","))):
        match = _TERM.match(term)
        if not match:
            raise ChecksError(f"{name}: cannot read {term!r}; write SCORE>=VALUE, e.g. clip_score>=28")
        score, op, value = match.groups()
        if score not in SCORES:
            raise ChecksError(f"{name}: unknown score {score!r}; known: {', '.join(SCORES)}")
        try:
            number = float(value)
        except ValueError:
            raise ChecksError(f"{name}: {value!r} in {term!r} is not a number") from None
        if not math.isfinite(number):
            raise ChecksError(f"{name}: {term!r} needs a finite number")
        thresholds.append(Threshold(score, op, number))
    return thresholds


@dataclass(frozen=True)
class Checks:
    """A job's checks, stored as `jobs.params["checks"]`."""

    image_checker: str  # safety checker directory, "nudenet", or "none" (explicitly unchecked)
    safety_shift: float = 0.0  # added to every concept threshold: negative is stricter
    quarantine: str = "quarantine"  # key prefix for blocked images, or "none": not stored at all
    clip_model: str | None = None
    aesthetic_head: str | None = None
    gate: tuple[Threshold, ...] = ()
    gate_mode: Literal["reroll", "best_of"] = "reroll"
    gate_n: int = 1  # candidates per item at most (reroll) or exactly (best_of)
    rank: str | None = None  # the score that orders candidates; default: the gate's first score

    @property
    def checked(self) -> bool:
        return self.image_checker != NONE

    @property
    def ranking_score(self) -> str | None:
        return self.rank or (self.gate[0].score if self.gate else None)

    def passes(self, scores: Mapping[str, float]) -> bool:
        return all(t.holds(scores) for t in self.gate)

    def quarantine_key(self, public_key: str) -> str | None:
        return None if self.quarantine == NONE else f"{self.quarantine.strip('/')}/{public_key}"

    def passes_all(self, verdict: Verdict) -> bool:
        """Not blocked and above every threshold: a re-roll stops here."""
        return not verdict.blocked and self.passes(verdict.scores)

    def best(self, verdicts: Sequence[Verdict]) -> int:
        """Which candidate to keep (its index): not blocked before blocked, passing the gate before failing it,
        then more thresholds met, then the higher ranking score, then the earlier candidate."""
        rank = self.ranking_score

        def key(index: int) -> tuple[Any, ...]:
            verdict = verdicts[index]
            met = sum(t.holds(verdict.scores) for t in self.gate)
            value = verdict.scores.get(rank, -math.inf) if rank else 0.0
            return (not verdict.blocked, met == len(self.gate), met, value, -index)

        return max(range(len(verdicts)), key=key)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate"] = [asdict(t) for t in self.gate]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Checks:
        """A job's checks; jobs submitted before checks existed ran unchecked."""
        if not data:
            return cls(image_checker=NONE, quarantine=NONE)
        fields = dict(data)
        fields["gate"] = tuple(Threshold(**t) for t in fields.get("gate", ()))
        return cls(**fields)


@dataclass(frozen=True)
class Safety:
    """An image checker's decision on one image, with every per-concept (or per-class) score it computed."""

    checker: str
    blocked: bool
    flagged: tuple[str, ...]
    scores: dict[str, float]
    shift: float | None = None  # the SD checker: added to every concept threshold
    threshold: float | None = None  # NudeNet: the confidence that flags a class
    asked: str | None = None  # the checker the job asked for, when the worker's policy floor replaced it

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "checker": self.checker,
            "blocked": self.blocked,
            "flagged": list(self.flagged),
            "scores": dict(self.scores),
        }
        if self.shift is not None:
            data["shift"] = self.shift
        if self.threshold is not None:
            data["threshold"] = self.threshold
        if self.asked is not None:
            data["asked"] = self.asked
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Safety:
        return cls(
            checker=str(data.get("checker", "?")),
            blocked=bool(data.get("blocked")),
            flagged=tuple(data.get("flagged", ())),
            scores=dict(data.get("scores", {})),
            shift=data.get("shift"),
            threshold=data.get("threshold"),
            asked=data.get("asked"),
        )


@dataclass(frozen=True)
class Verdict:
    """How one image was judged: its quality scores and, when the job has an image checker, its safety."""

    scores: dict[str, float]
    safety: Safety | None = None

    @property
    def blocked(self) -> bool:
        return self.safety is not None and self.safety.blocked


class PolicyError(RuntimeError):
    """A job cannot run under this worker's safety floor; the message names the setting."""


@dataclass(frozen=True)
class Policy:
    """The operator's safety floor on a worker (PIXELMILL_POLICY_*): what every job gets at least."""

    prompt_lists: tuple[str, ...]  # re-checked on every claimed item; empty: none
    image_checker: str | None  # used for every image; None: the job's own checker
    allow_checker_off: bool  # whether a job may run with no image checker at all
    safety_shift: float  # this worker's PIXELMILL_SAFETY_SHIFT: a job may be stricter, never laxer

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        lists = tuple(s.strip() for s in settings.policy_prompt_lists.split(",") if s.strip())
        checker = settings.policy_image_checker
        if checker in (None, "", NONE):
            checker = None
        elif checker != "nudenet":
            checker = _existing_dir(checker, "PIXELMILL_POLICY_IMAGE_CHECKER")
        return cls(
            prompt_lists=lists,
            image_checker=checker,
            allow_checker_off=settings.policy_allow_checker_off,
            safety_shift=settings.safety_shift,
        )

    def apply(self, asked: Checks) -> Checks:
        """The checks a job runs with here: its own, raised to this floor. Raises PolicyError when the job
        asks for no image checker and this worker has none to put in its place and may not run unchecked."""
        if self.image_checker is not None:
            return replace(
                asked,
                image_checker=self.image_checker,
                safety_shift=min(asked.safety_shift, self.safety_shift) if asked.checked else self.safety_shift,
            )
        if not asked.checked and not self.allow_checker_off:
            raise PolicyError(
                "this worker's safety policy requires an image checker, and the job asked for none: "
                "set PIXELMILL_POLICY_IMAGE_CHECKER on the worker (or, to allow unchecked jobs, "
                "PIXELMILL_POLICY_ALLOW_CHECKER_OFF=true)"
            )
        return asked


def candidate_seed(seed: int, n: int) -> int:
    """The n-th candidate's seed: the item's own seed, then the next ones."""
    return offset_seed(seed, n)


def resolve_checks(
    settings: Settings, *, gate: str | None = None, gate_attempts: int | None = None, best_of: int | None = None
) -> Checks:
    """Checks for a new job from settings and `submit` options; raises ChecksError naming what to fix."""
    checker = settings.image_checker
    if checker is None:
        raise ChecksError(
            "PIXELMILL_IMAGE_CHECKER is not set: point it at a safety checker directory (diffusers "
            "StableDiffusionSafetyChecker weights), set it to `nudenet`, or to `none` to run without an image "
            "checker (recorded on the job)"
        )
    if checker not in (NONE, "nudenet"):
        checker = _existing_dir(checker, "PIXELMILL_IMAGE_CHECKER")
    spec_name = "--gate" if gate is not None else "PIXELMILL_GATE"
    thresholds = tuple(parse_gate(settings.gate if gate is None else gate, name=spec_name))
    clip_model = settings.clip_model and _existing_dir(settings.clip_model, "PIXELMILL_CLIP_MODEL")
    aesthetic = settings.aesthetic_head and _existing_file(settings.aesthetic_head, "PIXELMILL_AESTHETIC_HEAD")
    if aesthetic and not clip_model:
        raise ChecksError("PIXELMILL_AESTHETIC_HEAD needs PIXELMILL_CLIP_MODEL: it scores CLIP image embeddings")
    available = {"clip_model": clip_model, "aesthetic_head": aesthetic}
    for name in [t.score for t in thresholds] + ([settings.gate_rank] if settings.gate_rank else []):
        if name not in SCORES:
            raise ChecksError(f"PIXELMILL_GATE_RANK: unknown score {name!r}; known: {', '.join(SCORES)}")
        if name in MODEL_SCORES and not available[MODEL_SCORES[name]]:
            raise ChecksError(f"{spec_name} uses {name}, which needs PIXELMILL_{MODEL_SCORES[name].upper()}")
    if best_of is not None and gate_attempts is not None:
        raise ChecksError("--best-of and --gate-attempts exclude each other")
    mode: Literal["reroll", "best_of"] = "best_of" if best_of is not None else settings.gate_mode
    n = best_of if best_of is not None else gate_attempts if gate_attempts is not None else settings.gate_attempts
    if n < 1:
        raise ChecksError(f"{'--best-of' if best_of is not None else '--gate-attempts'} must be at least 1")
    if mode == "reroll" and n > 1 and not thresholds:
        raise ChecksError("re-rolling needs a gate: set PIXELMILL_GATE or --gate, or use --best-of")
    if mode == "best_of" and n > 1 and not (thresholds or settings.gate_rank):
        raise ChecksError("best-of-n needs a score to rank by: set --gate, PIXELMILL_GATE or PIXELMILL_GATE_RANK")
    return Checks(
        image_checker=checker,
        safety_shift=settings.safety_shift,
        quarantine=settings.quarantine,
        clip_model=clip_model,
        aesthetic_head=aesthetic,
        gate=thresholds,
        gate_mode=mode,
        gate_n=n,
        rank=settings.gate_rank,
    )


def _existing_dir(value: str, name: str) -> str:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ChecksError(f"{name}: {value!r} is not a directory")
    return str(path.resolve())


def _existing_file(value: str, name: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ChecksError(f"{name}: {value!r} is not a file")
    return str(path.resolve())

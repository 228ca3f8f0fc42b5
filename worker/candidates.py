"""Step 4 of a chunk: generate every claimed item's candidate images and have them judged.

Without a quality gate an item has one candidate (its own seed); the batch's images go to the judge thread
and this step returns at once, so judging overlaps the next batch's generation and the upload threads wait
for the verdicts. With a gate, candidates n = 0, 1, … (seed + n) are made round by round, each round judged
before the next: re-roll mode stops an item at its first candidate that passes (and is not blocked),
best-of-n always makes n.

A batch that raises is generated again item by item, so only the culprit fails; a soft time limit ends the
step, and items without an image by then fail this attempt.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from celery.exceptions import SoftTimeLimitExceeded

from contract.checks import Checks, Verdict, candidate_seed
from contract.params import GenerationParams
from contract.transitions import ClaimedItem
from worker import photos
from worker.engine import Engine, Request
from worker.engine.lora import LoraChanged, LoraUnfusable

log = logging.getLogger(__name__)


class Judge(Protocol):
    def __call__(self, images: Sequence[Any], prompts: Sequence[str]) -> list[Verdict]: ...


@dataclass(frozen=True)
class GeneratedImage:
    """One candidate image of an item, as the engine made it."""

    n: int  # 0: the item's own seed; n: its n-th re-roll (seed + n)
    seed: int
    image: Any = field(repr=False)  # PIL.Image.Image (the producer side never imports PIL images from here)
    engine_id: str
    timings: dict[str, float]  # seconds per stage of its batch, and the batch size


@dataclass(frozen=True)
class JudgedBatch:
    verdicts: list[Verdict]
    seconds: float


@dataclass(frozen=True)
class JudgedImage:
    generated: GeneratedImage
    verdict: Verdict


@dataclass(frozen=True)
class Candidates:
    """An item's candidate images and their verdicts, which may still be on the judge thread: `judged()`
    waits for them. `positions[i]` is candidate i's place in its judged batch."""

    item: ClaimedItem
    images: tuple[GeneratedImage, ...]
    verdicts: Future[JudgedBatch]
    positions: tuple[int, ...]

    def judged(self) -> tuple[list[JudgedImage], float]:
        """Each candidate with its verdict, and the seconds its batch spent being judged."""
        batch = self.verdicts.result()
        return [
            JudgedImage(image, batch.verdicts[p]) for image, p in zip(self.images, self.positions, strict=True)
        ], batch.seconds


@dataclass(frozen=True)
class Failure:
    """An item that got no candidate this attempt, and why; `final`: no further attempt could succeed."""

    error: str
    final: bool = False
    infra: bool = False  # storage/database/broker trouble: backs off without using up an attempt


@dataclass(frozen=True)
class JobSpec:
    """What a chunk needs of its job: the model, the checks it asked for, and the checks it runs with here
    (those raised to this worker's safety floor)."""

    id: int
    model: str
    asked: Checks
    checks: Checks
    refused: str | None = None  # why this worker's policy will not run the job at all
    tenant: str = ""  # its tenant's name (a metrics label)
    trace: str | None = None  # the trace id of the request that made it (its log lines carry it)


def make_candidates(
    engine: Engine,
    judge: Judge,
    judging: ThreadPoolExecutor,
    checks: Checks,
    items: Sequence[ClaimedItem],
    *,
    soft_limit: int,
) -> dict[int, Candidates | Failure]:
    """Candidates (or a failure) for every claimed item, by item id."""
    results: dict[int, Candidates | Failure] = {}
    groups: dict[GenerationParams, list[ClaimedItem]] = defaultdict(list)
    for item in items:  # a chunk is planned homogeneous; a hand-made message may not be
        groups[item.params].append(item)
    try:
        for group in groups.values():
            if checks.gate_n > 1:
                results.update(_rounds(engine, judge, judging, checks, group))
            else:
                results.update(_single(engine, judge, judging, group))
    except SoftTimeLimitExceeded:
        for item in items:
            results.setdefault(item.id, Failure(f"batch exceeded PIXELMILL_TASK_SOFT_TIME_LIMIT ({soft_limit} s)"))
    except Exception:  # whatever broke, every claimed item still gets an outcome
        error = "generation failed:\n" + traceback.format_exc(limit=5)
        for item in items:
            results.setdefault(item.id, Failure(error))
    return results


def _single(
    engine: Engine, judge: Judge, judging: ThreadPoolExecutor, group: list[ClaimedItem]
) -> dict[int, Candidates | Failure]:
    """One candidate per item; the batch is judged on the judge thread while this returns."""
    results: dict[int, Candidates | Failure] = {}
    made: list[tuple[ClaimedItem, GeneratedImage]] = []
    for item, outcome in generate_batch(engine, group, n=0):
        if isinstance(outcome, Failure):
            results[item.id] = outcome
        else:
            made.append((item, outcome))
    if made:
        verdicts = judging.submit(judge_batch, judge, [g.image for _, g in made], [i.prompt for i, _ in made])
        for position, (item, generated) in enumerate(made):
            results[item.id] = Candidates(item=item, images=(generated,), verdicts=verdicts, positions=(position,))
    return results


def _rounds(
    engine: Engine, judge: Judge, judging: ThreadPoolExecutor, checks: Checks, group: list[ClaimedItem]
) -> dict[int, Candidates | Failure]:
    """Candidates round by round, each round judged before the next decides who re-rolls."""
    found: dict[int, list[JudgedImage]] = {item.id: [] for item in group}
    failures: dict[int, Failure] = {}
    seconds = 0.0
    pending = list(group)
    for n in range(checks.gate_n):
        made: list[tuple[ClaimedItem, GeneratedImage]] = []
        for item, outcome in generate_batch(engine, pending, n=n):
            if isinstance(outcome, Failure):
                failures.setdefault(item.id, outcome)
            else:
                made.append((item, outcome))
        if made:
            batch = judging.submit(judge_batch, judge, [g.image for _, g in made], [i.prompt for i, _ in made]).result()
            seconds += batch.seconds
            for (item, generated), verdict in zip(made, batch.verdicts, strict=True):
                found[item.id].append(JudgedImage(generated, verdict))
        if checks.gate_mode == "reroll":
            pending = [i for i in pending if found[i.id] and not checks.passes_all(found[i.id][-1].verdict)]
        if not pending:
            break
    results: dict[int, Candidates | Failure] = {}
    for item in group:
        judged = found[item.id]
        if not judged:
            results[item.id] = failures[item.id]
            continue
        done: Future[JudgedBatch] = Future()  # already judged: the store step need not wait
        done.set_result(JudgedBatch([j.verdict for j in judged], seconds))
        images = tuple(j.generated for j in judged)
        results[item.id] = Candidates(item=item, images=images, verdicts=done, positions=tuple(range(len(judged))))
    return results


def judge_batch(judge: Judge, images: list[Any], prompts: list[str]) -> JudgedBatch:
    """On the judge thread: one batched call, timed."""
    started = time.perf_counter()
    verdicts = judge(images, prompts)
    return JudgedBatch(verdicts, time.perf_counter() - started)


def generate_batch(
    engine: Engine, items: list[ClaimedItem], *, n: int
) -> Iterator[tuple[ClaimedItem, GeneratedImage | Failure]]:
    """Candidate `n` of each item in one engine call; a failing batch is retried item by item to isolate
    the culprit."""
    seeds = [candidate_seed(item.seed, n) for item in items]
    params = items[0].params
    try:
        placed = [
            photos.place(i.inputs or {}, params.width, params.height, mode=params.mode)
            for i in items
            if params.mode != "text"
        ]
    except (OSError, KeyError, ValueError) as exc:  # a photo gone or changed since submit: no attempt can help
        if len(items) > 1:  # only the culprit fails
            for item in items:
                yield from generate_batch(engine, [item], n=n)
        else:
            yield items[0], Failure(f"input: {exc}", final=True)
        return
    request = Request(
        prompts=[i.prompt for i in items],
        negatives=[i.negative for i in items],
        seeds=seeds,
        width=params.width,
        height=params.height,
        steps=params.steps,
        guidance=params.guidance,
        mode=params.mode,
        strength=params.strength,
        images=[p.canvas for p in placed] if placed else None,
        masks=[p.inpaint_mask() for p in placed] if params.mode == "background" else None,
        lora=params.lora,
        lora_sha256=params.lora_sha256,
        lora_scale=params.lora_scale if params.lora_scale is not None else 1.0,
    )
    try:
        result = engine.generate(request)
    except SoftTimeLimitExceeded:
        raise
    except (LoraChanged, LoraUnfusable) as exc:  # not the file checked at submit, or unfusable: no attempt can help
        for item in items:
            yield item, Failure(f"lora: {exc}", final=True)
        return
    except Exception:
        if len(items) == 1:
            yield items[0], Failure("generation failed:\n" + traceback.format_exc(limit=5))
            return
        log.warning("batch failed; generating its items one by one", extra={"items": len(items)})
        for item in items:
            yield from generate_batch(engine, [item], n=n)
        return
    timings = {**result.timings, "batch": len(items)}
    engine_id = result.engine_id or engine.engine_id
    images = result.images
    if params.mode == "background":  # the product's own pixels, exactly, whatever the engine did there
        images = [photos.composite(image, p) for image, p in zip(images, placed, strict=True)]
    for item, seed, image in zip(items, seeds, images, strict=True):
        yield item, GeneratedImage(n=n, seed=seed, image=image, engine_id=engine_id, timings=timings)

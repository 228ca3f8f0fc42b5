"""Step 5 of a chunk, on an upload thread: keep an item's best candidate, encode it and store it.

A kept image the checker blocked goes under the quarantine prefix (or nowhere with PIXELMILL_QUARANTINE=none),
never under `jobs/`. Objects are create-only: when an earlier attempt already stored the key, that object
is kept and recorded, so the ledger always describes the stored bytes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from contract.identity import object_key
from contract.params import IMAGE_FORMATS
from contract.settings import Settings
from contract.storage import Storage, create_or_get
from contract.transitions import CandidateRecord, Finish, ImageRecord
from worker import provenance
from worker.candidates import Candidates, JobSpec, JudgedImage
from worker.encode import encode


def store_item(storage: Storage, settings: Settings, spec: JobSpec, candidates: Candidates) -> Finish:
    """The item's finish: its stored image (or quarantined, or none) and a row for every candidate."""
    item, job, model, checks = candidates.item, spec.id, spec.model, spec.checks
    judged, judge_seconds = candidates.judged()
    if spec.asked.image_checker != checks.image_checker:  # record what the job asked for beside what ran
        judged = [
            JudgedImage(
                j.generated, replace(j.verdict, safety=replace(j.verdict.safety, asked=spec.asked.image_checker))
            )
            if j.verdict.safety is not None
            else j
            for j in judged
        ]
    kept_index = checks.best([j.verdict for j in judged])
    kept = judged[kept_index]
    rows = tuple(
        CandidateRecord(
            candidate=j.generated.n,
            seed=j.generated.seed,
            scores=j.verdict.scores,
            safety=j.verdict.safety,
            engine_id=j.generated.engine_id,
            outcome="blocked" if j.verdict.blocked else "kept" if j is kept else "rejected",
        )
        for j in judged
    )
    fmt = IMAGE_FORMATS[settings.image_format]
    public = object_key(job, item.key, item.variant, fmt.extension)
    safety = kept.verdict.safety
    key = checks.quarantine_key(public) if safety is not None and safety.blocked else public
    blocked = (
        {
            "stage": "image",
            "category": "nsfw",
            "checker": safety.checker,
            "flagged": list(safety.flagged),
            "quarantined": key,
        }
        if safety is not None and safety.blocked
        else None
    )
    if key is None:  # blocked, and PIXELMILL_QUARANTINE=none: the image is not kept anywhere
        return Finish(image=None, candidates=rows, blocked=blocked)
    generated, params = kept.generated, item.params
    metadata = {
        "prompt": item.prompt,
        "negative_prompt": item.negative,
        "seed": str(generated.seed),
        "model": model,
        "steps": str(params.steps),
        "guidance": str(params.guidance),
        "size": params.size,
        "job": str(job),
        "item": item.key,
        "variant": str(item.variant),
        "engine": generated.engine_id,
        "candidate": str(generated.n),
    }
    started = time.perf_counter()
    data = encode(generated.image, fmt.name, metadata, quality=settings.image_quality)  # with the provenance XMP
    data, marks = provenance.sign(data, fmt.name, settings)  # a C2PA manifest when configured, before storing
    encoded = time.perf_counter()
    data = create_or_get(storage, key, data, fmt.content_type)
    stored = time.perf_counter()
    timings = {
        **generated.timings,
        "judge": round(judge_seconds, 6),
        "encode": round(encoded - started, 6),
        "store": round(stored - encoded, 6),
    }
    if checks.gate_n > 1:
        timings["candidates"] = len(judged)
    image = ImageRecord(
        storage_key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        width=generated.image.width,
        height=generated.image.height,
        bytes=len(data),
        format=fmt.name,
        engine_id=generated.engine_id,
        timings=timings,
        scores=kept.verdict.scores,
        safety=safety,
        candidate=generated.n,
        visibility="quarantine" if blocked else "public",
        provenance=marks.as_json(),
    )
    return Finish(image=image, candidates=rows, blocked=blocked)

"""Manifest benchmark: the manifest of a 100k-item job streams as CSV, JSONL and Parquet in seconds with flat
memory. The ledger rows (job, items, images with scores, safety and provenance) are written directly, no
generation. Each format runs in a fresh subprocess that reports its wall time and peak RSS
(`resource.getrusage`), so "constant memory" is measured. A script, not a timed test.

    python bench/manifest.py                       # 100,000 items, every format, files in a temp dir
    python bench/manifest.py --items 20000 --dir /tmp/pm-manifest
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill_ledger(data_dir: Path, items: int, *, job_name: str = "bench", seed: int = 0, images: bool = True) -> int:
    """A finished job of `items` items written straight into the ledger (mostly succeeded, a few blocked and
    failed); returns its id. `images`: also an `images` row per succeeded item."""
    from sqlalchemy import insert

    from contract.ledger import Ledger
    from contract.schema import Image, Item, Job, State, utcnow
    from contract.settings import Settings
    from contract.tenants import DEFAULT_TENANT_ID

    rng = random.Random(seed)
    ledger = Ledger(Settings(data_dir=data_dir))
    now = utcnow()
    with ledger.session() as session:
        job = Job(
            tenant_id=DEFAULT_TENANT_ID,
            name=job_name,
            model="/models/sd15",
            params={"checks": None},
            counts={},
            created=now,
        )
        session.add(job)
        session.flush()
        job_id = job.id
    batch = 5000
    for start in range(0, items, batch):
        item_rows, states = [], []
        for n in range(start, min(start + batch, items)):
            roll = rng.random()
            state = State.failed if roll < 0.003 else State.blocked if roll < 0.006 else State.succeeded
            states.append(state)
            item_rows.append(
                {
                    "job_id": job_id,
                    "item_key": f"SKU-{n:07d}",
                    "variant": 0,
                    "prompt": f"studio photo of ceramic mug model {n}, sage green, white background",
                    "negative": "",
                    "params": {"width": 512, "height": 512, "steps": 30, "guidance": 7.5},
                    "seed": rng.getrandbits(62),
                    "content_hash": f"{n:064x}",
                    "state": state,
                    "attempts": 1,
                    "created": now,
                    "started_at": now,
                    "finished_at": now,
                    "error": "Traceback ...\nOSError: storage unreachable" if state == State.failed else None,
                    "block_reason": {"stage": "image", "category": "nsfw", "flagged": ["concept_3"]}
                    if state == State.blocked
                    else None,
                }
            )
        with ledger.session() as session:
            ids = session.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True), item_rows).all()
            if images:
                image_rows = [
                    {
                        "item_id": item_id,
                        "storage_key": f"jobs/{job_id}/SKU-{start + i:07d}/0.png",
                        "sha256": f"{rng.getrandbits(256):064x}",
                        "width": 512,
                        "height": 512,
                        "bytes": rng.randint(200_000, 400_000),
                        "format": "png",
                        "engine_id": "torch-fp16-cuda",
                        "timings": {"total": round(rng.uniform(0.8, 1.2), 3), "batch": 4},
                        "scores": {
                            "clip_score": round(rng.gauss(30, 2), 3),
                            "aesthetic": round(rng.gauss(5.5, 0.4), 3),
                            "sharpness": round(rng.gauss(400, 60), 1),
                            "exposure": round(rng.uniform(0.5, 0.8), 3),
                            "clipped_dark": 0.0,
                            "clipped_light": round(rng.uniform(0, 0.2), 3),
                            "white_background": round(rng.uniform(0.3, 0.7), 3),
                        },
                        "safety": {"checker": "sd", "blocked": False, "flagged": [], "scores": {"concept_1": -0.1}},
                        "candidate": 0,
                        "visibility": "public",
                        "created": now,
                        "provenance": {"xmp": True, "c2pa": False},
                    }
                    for i, (item_id, state) in enumerate(zip(ids, states))
                    if state == State.succeeded
                ]
                if image_rows:
                    session.execute(insert(Image), image_rows)
    ledger.close()
    return job_id


def _child(data_dir: str, job: int, fmt: str, output: str) -> None:
    """In a fresh process: stream the manifest to `output`, report wall time and peak RSS as JSON."""
    from contract.ledger import Ledger
    from contract.settings import Settings
    from contract.tenants import DEFAULT_TENANT_ID
    from producer.manifest import WRITERS, iter_manifest

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ledger = Ledger(Settings(data_dir=Path(data_dir)))
    started = time.perf_counter()
    with ledger.session(readonly=True) as session, open(output, "wb" if fmt == "parquet" else "w") as stream:
        manifest = iter_manifest(session, tenant_id=DEFAULT_TENANT_ID, job=job)
        rows = WRITERS[fmt](manifest, stream)  # type: ignore[operator]
    took = time.perf_counter() - started
    print(
        json.dumps(
            {
                "format": fmt,
                "rows": rows,
                "seconds": round(took, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_after_imports_mb": round(imported / 1024, 1),
                "file_mb": round(os.path.getsize(output) / 1e6, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--formats", default="csv,jsonl,parquet")
    parser.add_argument("--child", nargs=4, metavar=("DATA_DIR", "JOB", "FORMAT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2], args.child[3])
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="pm-manifest-"))
    data_dir = root / "data"
    started = time.perf_counter()
    job = fill_ledger(data_dir, args.items)
    print(f"ledger: {args.items} items written in {time.perf_counter() - started:.1f} s ({data_dir})", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for fmt in args.formats.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(data_dir), str(job), fmt, str(root / f"manifest.{fmt}")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()

"""Submit at catalogue speed: every figure of docs/benchmarks.md "Submit" in one run.

    PYTHONPATH=. python bench/submit.py [--rows 100000] [--repeat 3] [--naive-rows 100000] [--million 1000000]
                                        [--titles 1] [--no-servers]

Each scenario runs the real CLI (`python -m pixelmill submit`, a fresh process, import time included) on a
fresh data directory with the embedded defaults (SQLite WAL + embedded Redis), except the server scenario
(PostgreSQL + redis-server on loopback, started here with tests/servers.py). Printed: medians of --repeat runs.
The "titles" scenario submits realistic, benign product titles (`write_titles`) and measures the prompt filter
on them in this process: its cost a prompt, and what it blocks (false positives).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TEMPLATE = "studio photo of {title}, {colour}, white background"


def write_catalogue(path: Path, rows: int, changed: int = 0) -> None:
    """`rows` products; the first `changed` get another title (1 % changed = rows // 100)."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "title", "colour"])
        for i in range(rows):
            title = f"product {i} {'v2' if i < changed else ''}".strip()
            out.writerow([f"sku-{i:07d}", title, ("red", "blue", "green", "black")[i % 4]])


# Product titles as shops write them, for the "titles" scenario: brands with accents, nouns in five languages,
# model codes (letters and digits: what the prompt filter reads as possible leetspeak), measures, colours.
BRANDS = [
    "Acme",
    "Nordlicht",
    "Zenith",
    "Kobalt",
    "Élan",
    "Müller & Söhne",
    "Sakura",
    "Orion",
    "Vértice",
    "Bluefin",
    "Høgh",
    "Lumière",
    "Atlas",
    "Pioneer",
    "Crest",
    "Łódź Design",
    "Ōkami",
    "Fjällräven-ish",
]
NOUNS = [
    "wireless headphones",
    "running shoes",
    "leather handbag",
    "espresso machine",
    "ceramic vase",
    "office chair",
    "yoga mat",
    "desk lamp",
    "backpack",
    "wrist watch",
    "sunglasses",
    "winter jacket",
    "kitchen knife set",
    "bluetooth speaker",
    "linen shirt",
    "robe en lin",
    "Lederjacke",
    "Kaffeemühle",
    "zapatillas de running",
    "camiseta de algodón",
    "sac à dos",
    "borsa in pelle",
    "tênis de corrida",
]
ADJECTIVES = ["premium", "classic", "slim", "ultra-light", "vintage", "modern", "compact", "pro", "eco", "", ""]
MEASURES = ["", "", "", "32GB", "1000 ml", "500ml", "size 42", "XL", "2 pack", "10 x 20 cm", "1.5 L", "EU 38"]
COLOURS = [
    "red",
    "navy blue",
    "forest green",
    "black",
    "white",
    "beige",
    "rose gold",
    "grey",
    "azul marino",
    "schwarz",
    "bordeaux",
    "nude",
]


def write_titles(path: Path, rows: int, seed: int = 7) -> None:
    """`rows` benign products with varied, realistic titles (deterministic for a seed)."""
    import random

    rnd = random.Random(seed)

    def code() -> str:
        # No vowels, K, S or X: a random prefix never spells a word ("SEX-2372", "KKK47") the filter rightly
        # blocks; what it blocks here is its reading of the digits ("F4655" as "fags").
        letters = "".join(rnd.choice("BCDFGHLMNPRTVWZ") for _ in range(rnd.randint(1, 3)))
        number = rnd.randint(10, 9999)
        return rnd.choice(
            [
                f"{letters}-{number}{rnd.choice(['', 'B', 'X', 'S', 'Pro'])}",
                f"{letters}{number}",
                str(rnd.randint(100, 99999)),
            ]
        )

    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "title", "colour"])
        for i in range(rows):
            parts = [rnd.choice(BRANDS), rnd.choice(ADJECTIVES), rnd.choice(NOUNS), code(), rnd.choice(MEASURES)]
            out.writerow([f"sku-{i:07d}", " ".join(p for p in parts if p), rnd.choice(COLOURS)])


def filter_cost(path: Path) -> tuple[float, int, list[str]]:
    """The builtin prompt filter on a catalogue's prompts, in this process: µs per prompt (a fresh filter, so
    first-seen words cost what they cost in a submit), how many it blocks, and the first few blocked."""
    from contract.promptfilter import PromptFilter

    with open(path, newline="") as f:
        prompts = [TEMPLATE.format(**row) for row in csv.DictReader(f)]
    lists = PromptFilter.from_sources(("builtin",))
    start = time.perf_counter()
    verdicts = [lists.check(p) for p in prompts]
    seconds = time.perf_counter() - start
    blocked = [f"{p!r}: {m.term}" for p, m in zip(prompts, verdicts, strict=True) if m is not None]
    return seconds / len(prompts) * 1e6, len(blocked), blocked[:5]


def env_for(data: Path, **extra: str) -> dict[str, str]:
    # Bytecode caches allowed (an installed CLI has them; a dev shell's PYTHONDONTWRITEBYTECODE would make
    # every run compile the project's modules again, ~0.1 s).
    return {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PIXELMILL_DATA_DIR": str(data),
        "PIXELMILL_IMAGE_CHECKER": "none",
        "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true",
        **extra,
    }


CPU: dict[str, list[float]] = {}  # scenario -> CPU seconds (user + sys) of each submit process


def timed_submit(
    data: Path, model: Path, catalogue: Path, *args: str, env: dict[str, str], label: str, stem: str
) -> tuple[float, dict[str, Any], resource.struct_rusage]:
    """Wall seconds, the JSON result and the resource usage of one `pixelmill submit`, reaped with os.wait4 (its
    output in `stem`.out/.err beside `data`); its CPU seconds go to CPU[label]."""
    options = ["--model", str(model), "--size", "64x64", "--steps", "4", "--json"]
    argv = [sys.executable, "-m", "pixelmill", "submit", str(catalogue), "--template", TEMPLATE, *options, *args]
    out_path, err_path = data.parent / f"{stem}.out", data.parent / f"{stem}.err"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{label} submit failed ({proc.returncode}): {err_path.read_text()[-2000:]}")
    CPU.setdefault(label, []).append(usage.ru_utime + usage.ru_stime)
    return seconds, json.loads(out_path.read_text().strip().splitlines()[-1]), usage


def cli_submit(
    data: Path, model: Path, catalogue: Path, *args: str, env: dict[str, str] | None = None, label: str = ""
) -> tuple[float, dict[str, Any]]:
    """Wall seconds and the JSON result of one `pixelmill submit`; its CPU seconds go to CPU[label] (on a shared,
    loaded machine wall time includes waiting for a core; CPU time does not)."""
    seconds, result, _ = timed_submit(
        data, model, catalogue, *args, env=env or env_for(data), label=label, stem=data.name
    )
    return seconds, result


def stop_broker(data: Path) -> None:
    subprocess.run([sys.executable, "-m", "pixelmill", "broker", "stop"], env=env_for(data), capture_output=True)


def submit_peak_rss(data: Path, model: Path, catalogue: Path, env: dict[str, str]) -> tuple[float, dict[str, Any], int]:
    """Like cli_submit, with the child's own peak RSS (os.wait4 reports it)."""
    seconds, result, usage = timed_submit(data, model, catalogue, env=env, label="million", stem="million")
    return seconds, result, usage.ru_maxrss  # KiB on Linux


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh(tmp: Path, name: str) -> Path:
    path = tmp / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def naive_loop(data: Path, n: int) -> float:
    """n apply_async calls, one item each, to the same embedded broker: what a straightforward producer does."""
    os.environ.update({k: v for k, v in env_for(data).items() if k.startswith("PIXELMILL_")})
    from contract.queue import TASK_GENERATE, make_celery
    from contract.settings import load_settings

    app = make_celery(load_settings(data_dir=data))
    task = app.signature(TASK_GENERATE)
    start = time.perf_counter()
    for i in range(n):
        task.apply_async(args=[{"v": 1, "job": 0, "items": [i + 1]}], queue="pixelmill.bench-naive")
    return time.perf_counter() - start


def status_time(data: Path, job: int, repeat: int) -> tuple[float, int]:
    """Mark the job's items succeeded with image rows carrying three scores, then time `job_status`."""
    import random
    from typing import cast

    from sqlalchemy import Table, insert, text

    from contract.ledger import Ledger
    from contract.schema import Image, ImageScore, utcnow
    from contract.settings import load_settings
    from contract.tenants import DEFAULT_TENANT_ID
    from producer.status import job_status

    ledger = Ledger(load_settings(data_dir=data))
    rnd = random.Random(1)
    now = utcnow()
    scores: dict[int, dict[str, float]] = {}
    with ledger.session() as session:
        # Bench set-up only: the ledger rows a finished job has, written directly (not a transition).
        session.execute(
            text("UPDATE items SET state='succeeded', started_at=:t, finished_at=:t WHERE job_id=:j"),
            {"t": now.replace(tzinfo=None), "j": job},
        )
        ids = session.execute(text("SELECT id, item_key FROM items WHERE job_id=:j"), {"j": job}).all()
        session.execute(
            insert(cast(Table, Image.__table__)),
            [
                {
                    "item_id": i,
                    "storage_key": f"jobs/{job}/{k}/0.png",
                    "sha256": "0" * 64,
                    "width": 64,
                    "height": 64,
                    "bytes": 4000,
                    "format": "png",
                    "engine_id": "bench",
                    "timings": {"generate": 0.1},
                    "scores": scores.setdefault(
                        i,
                        {
                            "clip_score": rnd.gauss(30, 3),
                            "sharpness": rnd.uniform(10, 500),
                            "aesthetic": rnd.gauss(5, 1),
                        },
                    ),
                    "candidate": 0,
                    "visibility": "public",
                    "created": now,
                }
                for i, k in ids
            ],
        )
        # ... and the score rows `transitions.finish` writes beside each image.
        session.execute(
            insert(cast(Table, ImageScore.__table__)),
            [
                {"item_id": i, "name": name, "job_id": job, "value": value}
                for i, values in scores.items()
                for name, value in values.items()
            ],
        )
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with ledger.session(readonly=True) as session:
            status = job_status(session, job, tenant_id=DEFAULT_TENANT_ID)
        times.append(time.perf_counter() - start)
    assert status.succeeded == len(ids) and status.scores["clip_score"]["n"] == len(ids), status
    ledger.close()
    return median(times), len(ids)


def timed(label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive-rows", type=int, default=100_000, help="apply_async calls in the naive loop")
    parser.add_argument("--million", type=int, default=1_000_000, help="rows of the memory run; 0: skip it")
    parser.add_argument("--no-servers", action="store_true", help="skip PostgreSQL + redis-server")
    parser.add_argument("--titles", type=int, default=1, help="1: also submit realistic product titles; 0: skip")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixelmill-bench-submit-"))
    rows, changed = args.rows, args.rows // 100
    figures: dict[str, Any] = {"rows": rows, "repeat": args.repeat, "load_average_start": os.getloadavg()[0]}
    try:
        model = tmp / "model"
        subprocess.run(
            [sys.executable, "-m", "pixelmill", "model", "tiny", str(model)],
            env=env_for(tmp / "m"),
            check=True,
            capture_output=True,
        )
        base, edited = tmp / "catalogue.csv", tmp / "catalogue-1pct.csv"
        write_catalogue(base, rows)
        write_catalogue(edited, rows, changed)

        warm = tmp / "warm.csv"
        write_catalogue(warm, 10)
        cli_submit(fresh(tmp, "warmup"), model, warm, label="warmup")  # writes the bytecode caches; not a figure
        CPU.pop("warmup")

        firsts, unchanged, one_pct, cat_first, cat_unchanged, cat_one_pct = [], [], [], [], [], []
        messages = 0
        for r in range(args.repeat):
            data = fresh(tmp, f"embedded-{r}")
            seconds, result = cli_submit(data, model, base, label="submit")
            firsts.append(seconds)
            messages = result["messages"]
            assert result["items"] == rows, result
            seconds, result = cli_submit(data, model, base, label="rerun_unchanged")
            unchanged.append(seconds)
            assert result["items"] == 0 and result["skipped"] == rows, result
            seconds, result = cli_submit(data, model, edited, label="rerun_1pct")
            one_pct.append(seconds)
            assert result["items"] == changed, result
            if r == 0:
                status_s, status_n = status_time(data, 1, max(5, args.repeat))
                figures["status_s"], figures["status_items"] = status_s, status_n
            data = fresh(tmp, f"catalogue-{r}")
            seconds, result = cli_submit(data, model, base, "--catalogue", "nightly", label="catalogue_submit")
            cat_first.append(seconds)
            seconds, result = cli_submit(data, model, base, "--catalogue", "nightly", label="catalogue_rerun_unchanged")
            cat_unchanged.append(seconds)
            assert result["changes"]["unchanged"] == rows, result
            seconds, result = cli_submit(data, model, edited, "--catalogue", "nightly", label="catalogue_rerun_1pct")
            cat_one_pct.append(seconds)
            assert result["changes"]["changed"] == changed and result["items"] == changed, result
            print(
                f"run {r + 1}: submit {firsts[-1]:.2f} s, rerun {unchanged[-1]:.2f} s, 1% {one_pct[-1]:.2f} s; "
                f"catalogue {cat_first[-1]:.2f} / {cat_unchanged[-1]:.2f} / {cat_one_pct[-1]:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        figures.update(
            submit_s=median(firsts),
            rerun_unchanged_s=median(unchanged),
            rerun_1pct_s=median(one_pct),
            catalogue_submit_s=median(cat_first),
            catalogue_rerun_unchanged_s=median(cat_unchanged),
            catalogue_rerun_1pct_s=median(cat_one_pct),
            messages=messages,
        )

        if args.titles:
            titles = tmp / "titles.csv"
            write_titles(titles, rows)
            times = []
            for r in range(args.repeat):
                seconds, result = cli_submit(fresh(tmp, f"titles-{r}"), model, titles, label="titles_submit")
                times.append(seconds)
            us, blocked, examples = filter_cost(titles)
            assert result["blocked"] == blocked and result["items"] + blocked == rows, (result, blocked)
            figures.update(
                titles_submit_s=median(times),
                titles_filter_us=us,
                titles_blocked=blocked,  # every title is benign: these are the filter's false positives
                titles_blocked_examples=examples,
                catalogue_filter_us=filter_cost(base)[0],  # the same measure on the main scenario's catalogue
            )
            print(f"titles: submit {median(times):.2f} s, filter {us:.1f} µs a prompt", file=sys.stderr, flush=True)

        if args.naive_rows:
            data = fresh(tmp, "naive")
            naive = timed("naive loop", lambda: naive_loop(data, args.naive_rows))
            figures["naive_apply_async_s"] = naive * rows / args.naive_rows  # scaled to --rows if fewer were sent
            figures["naive_calls"] = args.naive_rows
            figures["speedup_vs_naive"] = figures["naive_apply_async_s"] / figures["submit_s"]

        if not args.no_servers:
            from servers import Postgres, RedisServer

            with Postgres(tmp / "pg") as pg, RedisServer(tmp / "redis") as redis:
                times = []
                for r in range(args.repeat):
                    url = pg.create_database(f"bench{r}")
                    data = fresh(tmp, f"servers-{r}")
                    env = env_for(data, PIXELMILL_DATABASE_URL=url, PIXELMILL_BROKER_URL=redis.url)
                    subprocess.run(
                        [sys.executable, "-m", "pixelmill", "db", "upgrade"], env=env, check=True, capture_output=True
                    )
                    seconds, result = cli_submit(data, model, base, env=env, label="servers_submit")
                    assert result["items"] == rows, result
                    times.append(seconds)
                    redis.flushall()
                figures["servers_submit_s"] = median(times)

        if args.million:
            big = tmp / "million.csv"
            write_catalogue(big, args.million)
            data = fresh(tmp, "million")
            seconds, result, peak_kib = submit_peak_rss(data, model, big, env_for(data))
            assert result["items"] == args.million, result
            figures.update(
                million_rows=args.million,
                million_s=seconds,
                million_peak_rss_mb=peak_kib / 1024,
                million_messages=result["messages"],
            )
    finally:
        for data in tmp.iterdir():
            if (data / "broker").exists():
                stop_broker(data)
        shutil.rmtree(tmp, ignore_errors=True)
    figures.update({f"{label}_cpu_s": median(v) for label, v in CPU.items()})
    figures["load_average_end"] = os.getloadavg()[0]
    print(
        json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=1, ensure_ascii=False
        )
    )


if __name__ == "__main__":
    main()

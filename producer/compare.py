"""A/B comparison of two finished jobs over the same products: which model or setting made the better images?

The two jobs are paired by catalogue key and variant (the same rows submitted twice, under two models or settings;
with the same seed the only difference is what was changed). For every quality score both images of a pair have,
it reports the mean of B - A with a 95 % bootstrap confidence interval (paired: rows are resampled, not images)
and B's win rate (ties count half); beside them each job's blocked and failed rates and GPU-seconds per image, read
from the same per-run summaries `pixelmill drift` uses (`producer/drift.run_stats`).

The interval is a percentile bootstrap with a fixed seed (the same jobs give the same interval); above
`EXACT_PAIRS` pairs it is the normal approximation (mean ± 1.96 standard errors), which the bootstrap approaches at
that size anyway and which stays instant for a 100k-row catalogue.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

from sqlalchemy.orm import Session

from contract.storage import Storage
from contract.tenants import owned_job
from producer.drift import DRIFT_SCORES, Run, run_stats
from producer.manifest import SCORES, ManifestRow, iter_manifest
from producer.sheet import script_json, thumbnail

RESAMPLES = 2000
EXACT_PAIRS = 5000  # above this, the normal approximation instead of resampling
CONFIDENCE = 0.95


class CompareError(RuntimeError):
    """Nothing to compare (a job unknown to the tenant, unfinished, or sharing no rows with the other)."""


@dataclass(frozen=True)
class ScoreDiff:
    """One score over the pairs where both images have it: B's mean minus A's, its interval, B's win rate."""

    name: str
    pairs: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    win_rate: float | None  # None: a score where higher is not simply better (exposure, clipped fractions)

    @property
    def significant(self) -> bool:
        """The interval excludes 0: B differs from A on this score beyond the noise of these pairs."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Pair:
    """One catalogue row as both jobs made it."""

    key: str
    variant: int
    a: ManifestRow
    b: ManifestRow


@dataclass(frozen=True)
class Comparison:
    a: Run
    b: Run
    paired: int  # rows both jobs have
    only_a: int
    only_b: int
    both_succeeded: int
    scores: tuple[ScoreDiff, ...]

    @staticmethod
    def _side(run: Run) -> dict[str, Any]:
        per_image = run.gpu_seconds / run.succeeded if run.succeeded else None
        return {
            "job": run.job,
            "name": run.name,
            "items": run.items,
            "succeeded": run.succeeded,
            "blocked_rate": round(run.blocked_rate, 4),
            "failed_rate": round(run.failed_rate, 4),
            "gpu_seconds_per_image": None if per_image is None else round(per_image, 4),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self._side(self.a),
            "b": self._side(self.b),
            "paired": self.paired,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "both_succeeded": self.both_succeeded,
            "confidence": CONFIDENCE,
            "scores": [{**asdict(s), "significant": s.significant} for s in self.scores],
        }


def pairs(session: Session, tenant_id: int, job_a: int, job_b: int) -> tuple[list[Pair], int, int]:
    """The rows both jobs have, by (key, variant), and how many rows only A and only B have."""
    rows_a = {(r.key, r.variant): r for r in iter_manifest(session, tenant_id=tenant_id, job=job_a)}
    matched: list[Pair] = []
    only_b = 0
    for row in iter_manifest(session, tenant_id=tenant_id, job=job_b):
        found = rows_a.pop((row.key, row.variant), None)
        if found is None:
            only_b += 1
        else:
            matched.append(Pair(row.key, row.variant, found, row))
    return matched, len(rows_a), only_b


def compare_jobs(session: Session, tenant_id: int, job_a: int, job_b: int) -> tuple[Comparison, list[Pair]]:
    """The comparison of the tenant's finished jobs A and B, and their pairs (for the sheet). Needs a writable
    session: run summaries computed here are cached, as `pixelmill drift` caches them."""
    runs = []
    for job in (job_a, job_b):
        if owned_job(session, tenant_id, job) is None:
            raise CompareError(f"job {job} not found")
        run = run_stats(session, job)
        if run is None:
            raise CompareError(f"job {job} still has items to do: compare finished jobs")
        runs.append(run)
    matched, only_a, only_b = pairs(session, tenant_id, job_a, job_b)
    if not matched:
        raise CompareError(f"jobs {job_a} and {job_b} share no catalogue key: submit the same rows to both")
    both = [p for p in matched if p.a.state == "succeeded" and p.b.state == "succeeded"]
    diffs = tuple(d for name in SCORES if (d := score_diff(name, both)) is not None)
    comparison = Comparison(runs[0], runs[1], len(matched), only_a, only_b, len(both), diffs)
    return comparison, matched


def score_diff(name: str, matched: Sequence[Pair]) -> ScoreDiff | None:
    values = [
        (a, b) for p in matched if (a := getattr(p.a, name)) is not None and (b := getattr(p.b, name)) is not None
    ]
    if not values:
        return None
    deltas = [b - a for a, b in values]
    low, high = interval(deltas)
    wins = None
    if name in DRIFT_SCORES:  # higher is better
        wins = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in deltas) / len(deltas)
    return ScoreDiff(
        name=name,
        pairs=len(values),
        mean_a=statistics.fmean(a for a, _ in values),
        mean_b=statistics.fmean(b for _, b in values),
        diff=statistics.fmean(deltas),
        low=low,
        high=high,
        win_rate=wins,
    )


def interval(deltas: Sequence[float], *, seed: int = 0) -> tuple[float, float]:
    """A CONFIDENCE interval of the mean of `deltas`: percentile bootstrap, or normal above EXACT_PAIRS."""
    n = len(deltas)
    mean = statistics.fmean(deltas)
    if n == 1:
        return mean, mean
    if n > EXACT_PAIRS:
        half = 1.959964 * statistics.stdev(deltas) / math.sqrt(n)
        return mean - half, mean + half
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(deltas, k=n)) for _ in range(RESAMPLES))
    tail = (1 - CONFIDENCE) / 2
    return means[int(tail * RESAMPLES)], means[min(RESAMPLES - 1, int((1 - tail) * RESAMPLES))]


def write_side_by_side(stream: IO[str], comparison: Comparison, matched: Sequence[Pair], storage: Storage) -> int:
    """One self-contained HTML page: the summary table, then each pair's A and B thumbnails with their scores.
    Blocked images are never shown, only marked (as on every contact sheet); strings reach the page as JSON
    rendered with textContent."""
    rows = [
        {"k": p.key, "v": p.variant, "a": _side(p.a, storage), "b": _side(p.b, storage)}
        for p in sorted(matched, key=lambda p: (p.key, p.variant))
    ]
    a, b = comparison.a, comparison.b
    stream.write(_HEAD.replace("{title}", f"job {a.job} vs job {b.job}"))
    stream.write('<script type="application/json" id="data">')
    stream.write(script_json({"summary": comparison.as_dict(), "rows": rows}))
    stream.write("</script>\n")
    stream.write(_SCRIPT)
    stream.write("</body></html>\n")
    return len(rows)


def _side(row: ManifestRow, storage: Storage) -> dict[str, Any]:
    src = None
    if row.state == "succeeded" and row.object_key is not None:
        try:
            src = thumbnail(storage.get(row.object_key))
        except Exception:  # noqa: BLE001 (a missing object shows as a tile without image)
            src = None
    scores = {name: round(v, 4) for name in SCORES if (v := getattr(row, name)) is not None}
    return {"st": row.state, "src": src, "s": scores, "p": (row.prompt or "")[:300]}


def table_lines(comparison: Comparison) -> Iterator[list[str]]:
    """The rows of the score table, as text cells (the CLI's rich table and tests read the same)."""
    for s in comparison.scores:
        wins = "" if s.win_rate is None else f"{s.win_rate:.0%}"
        mark = " *" if s.significant else ""
        yield [
            s.name,
            str(s.pairs),
            f"{s.mean_a:.4g}",
            f"{s.mean_b:.4g}",
            f"{s.diff:+.4g}{mark}",
            f"[{s.low:+.4g}, {s.high:+.4g}]",
            wins,
        ]


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pixelmill compare: {title}</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
table.sum{border-collapse:collapse;margin-bottom:16px}
table.sum td,table.sum th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.pair{display:flex;gap:12px;align-items:flex-start;border-top:1px solid #ddd;padding:8px 0}
.key{width:180px;font-weight:600;word-break:break-all}
.side{width:180px}
.side img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;display:block}
.none{width:160px;height:160px;background:#eee;color:#777;display:flex;align-items:center;justify-content:center}
.sc{font-size:12px;color:#444}
.better{color:#0a7a2f}.worse{color:#b3261e}
</style></head><body>
<h1 id="title"></h1><div id="summary"></div><div id="pairs"></div>
"""

_SCRIPT = """<script>
(function () {
  var data = JSON.parse(document.getElementById('data').textContent);
  var s = data.summary;
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls; return e; }
  document.getElementById('title').textContent =
    'job ' + s.a.job + ' (A, ' + s.a.name + ') vs job ' + s.b.job + ' (B, ' + s.b.name + ')';
  var sum = document.getElementById('summary');
  sum.appendChild(el('p', s.paired + ' rows in both jobs, ' + s.both_succeeded + ' succeeded in both; ' +
    s.only_a + ' only in A, ' + s.only_b + ' only in B. Intervals: ' + Math.round(s.confidence * 100) + ' %.'));
  var t = el('table', undefined, 'sum'), head = el('tr');
  ['score', 'pairs', 'mean A', 'mean B', 'B - A', 'interval', 'B wins'].forEach(function (h) {
    head.appendChild(el('th', h)); });
  t.appendChild(head);
  s.scores.forEach(function (d) {
    var tr = el('tr');
    [d.name, d.pairs, d.mean_a.toPrecision(4), d.mean_b.toPrecision(4),
     (d.diff >= 0 ? '+' : '') + d.diff.toPrecision(3) + (d.significant ? ' *' : ''),
     '[' + d.low.toPrecision(3) + ', ' + d.high.toPrecision(3) + ']',
     d.win_rate === null ? '' : Math.round(d.win_rate * 100) + ' %'].forEach(function (c) {
      tr.appendChild(el('td', String(c))); });
    t.appendChild(tr);
  });
  var runs = el('tr'); ['per run', 'A', 'B'].forEach(function (h) { runs.appendChild(el('th', h)); });
  t.appendChild(runs);
  ['blocked_rate', 'failed_rate', 'gpu_seconds_per_image'].forEach(function (k) {
    var tr = el('tr'); tr.appendChild(el('td', k));
    [s.a[k], s.b[k]].forEach(function (v) { tr.appendChild(el('td', v === null ? '' : String(v))); });
    t.appendChild(tr);
  });
  sum.appendChild(t);
  var pairs = document.getElementById('pairs');
  function side(label, x, other) {
    var box = el('div', undefined, 'side');
    if (x.src) { var img = el('img'); img.src = x.src; img.alt = label; box.appendChild(img); }
    else { box.appendChild(el('div', x.st, 'none')); }
    box.appendChild(el('div', label + ': ' + x.st, 'sc'));
    Object.keys(x.s).forEach(function (k) {
      var cls = 'sc';
      if (other.s[k] !== undefined && k !== 'exposure' && k.indexOf('clipped') !== 0) {
        cls += x.s[k] > other.s[k] ? ' better' : x.s[k] < other.s[k] ? ' worse' : '';
      }
      box.appendChild(el('div', k + ' ' + x.s[k], cls));
    });
    return box;
  }
  data.rows.forEach(function (r) {
    var row = el('div', undefined, 'pair');
    var key = el('div', r.k + (r.v ? ' #' + r.v : ''), 'key'); key.title = r.a.p;
    row.appendChild(key); row.appendChild(side('A', r.a, r.b)); row.appendChild(side('B', r.b, r.a));
    pairs.appendChild(row);
  });
})();
</script>
"""

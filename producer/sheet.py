"""A contact sheet: one self-contained HTML file to look at a job's (or catalogue's) images at once.

Thumbnails are small JPEG data URIs made with Pillow (or, with `link`, the objects' URLs, for jobs too big
to embed); tiles are rendered 500 per page by plain JavaScript from one JSON block (no CDN, works offline),
sortable by any score, filterable to the problems. Blocked images are never shown, only marked. Every
string from the catalogue reaches the page as JSON rendered with `textContent`, or through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from pixelmill.storage import Storage
from producer.manifest import SCORES, ManifestRow, iter_manifest
from producer.status import percentile

THUMB = 160  # px, longest side
PAGE = 500  # tiles per page
_BINS = 20
LOW_MARKED = ("clip_score", "aesthetic", "sharpness")  # higher is better: a tile below p10 is marked "low"


@dataclass
class Summary:
    """Counts and score distributions over the sheet's rows (first pass)."""

    rows: int = 0
    states: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    scores: dict[str, list[float]] = field(default_factory=dict)

    def add(self, row: ManifestRow) -> None:
        self.rows += 1
        self.states[row.state or "missing"] += 1
        if row.change:
            self.changes[row.change] += 1
        if row.state == "succeeded":
            for name in SCORES:
                value = getattr(row, name)
                if value is not None:
                    self.scores.setdefault(name, []).append(value)

    def p10(self) -> dict[str, float]:
        """The low bar per higher-is-better score: below the run's own p10 (when the scores spread at all)."""
        return {
            name: percentile(v, 10)
            for name, v in self.scores.items()
            if name in LOW_MARKED and len(v) >= 5 and percentile(v, 10) < percentile(v, 50)
        }


def write_sheet(
    session: Session,
    stream: IO[str],
    *,
    title: str,
    job: int | None = None,
    catalogue: str | None = None,
    storage: Storage,
    link: bool = False,
    expires: int = 3600,
) -> int:
    """Write the sheet; returns the number of tiles. Two passes over the ledger: the summary, then tiles."""
    summary = Summary()
    for row in iter_manifest(session, job=job, catalogue=catalogue):
        summary.add(row)
    low = summary.p10()
    stream.write(_HEAD.replace("{{title}}", html.escape(title)))
    stream.write(_summary_html(title, summary))
    stream.write('<script id="tiles" type="application/json">[')
    rows = iter_manifest(session, job=job, catalogue=catalogue, storage=storage, urls=link, expires=expires)
    for n, row in enumerate(rows):
        stream.write(("," if n else "") + _json(_tile(row, storage, link, low)))
    stream.write("]</script>\n")
    stream.write(f"<script>const PAGE = {PAGE}; const SCORES = {_json(list(SCORES))};</script>\n")
    stream.write(_SCRIPT)
    stream.write("</body></html>\n")
    return summary.rows


def _json(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, no HTML comment openers."""
    return (
        json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _tile(row: ManifestRow, storage: Storage, link: bool, low: dict[str, float]) -> dict[str, Any]:
    src = None
    if row.object_key is not None:
        if link:
            src = row.url
        else:
            try:
                src = thumbnail(storage.get(row.object_key))
            except Exception:  # noqa: BLE001 (a missing object shows as a tile without image)
                src = None
    lows = [name for name, p10 in low.items() if getattr(row, name) is not None and getattr(row, name) < p10]
    return {
        "k": row.key,
        "v": row.variant,
        "st": row.state,
        "ch": row.change,
        "src": src,
        "item": row.item,
        "s": {name: getattr(row, name) for name in SCORES if getattr(row, name) is not None},
        "safety": row.safety,
        "err": row.error,
        "low": lows,
        "p": (row.prompt or "")[:300],
    }


def thumbnail(data: bytes) -> str:
    """A JPEG data URI, longest side THUMB px."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=75, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def histogram_svg(values: Iterable[float], width: int = 180, height: int = 36) -> str:
    """A small inline SVG histogram (20 bins) of one score."""
    data = sorted(values)
    if not data:
        return ""
    if data[0] == data[-1]:
        return f'<div class="dim">all {data[0]:.4g}</div>'
    lo, hi = data[0], data[-1]
    span = (hi - lo) or 1.0
    bins = [0] * _BINS
    for value in data:
        bins[min(int((value - lo) / span * _BINS), _BINS - 1)] += 1
    top = max(bins)
    bar = width / _BINS
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}"/>'
        for i, c in enumerate(bins)
        if (h := c / top * height) > 0
    )
    return (
        f'<svg class="hist" width="{width}" height="{height + 12}" viewBox="0 0 {width} {height + 12}" '
        f'role="img" aria-label="histogram">{rects}'
        f'<text x="0" y="{height + 11}">{lo:.3g}</text>'
        f'<text x="{width}" y="{height + 11}" text-anchor="end">{hi:.3g}</text></svg>'
    )


def _summary_html(title: str, summary: Summary) -> str:
    states = "".join(
        f'<span class="pill st-{html.escape(k)}">{html.escape(k)} <b>{v}</b></span>'
        for k, v in sorted(summary.states.items())
    )
    changes = "".join(
        f'<span class="pill">{html.escape(k)} <b>{v}</b></span>' for k, v in sorted(summary.changes.items())
    )
    cards = "".join(
        f'<div class="score"><div class="sname">{html.escape(name)}</div>'
        f'<div class="snum">median <b>{percentile(v, 50):.4g}</b> · p10 {percentile(v, 10):.4g} · '
        f'p90 {percentile(v, 90):.4g} <span class="dim">(n={len(v)})</span></div>{histogram_svg(v)}</div>'
        for name, v in sorted(summary.scores.items())
    )
    return (
        f'<header><h1>{html.escape(title)}</h1><div class="counts">{summary.rows} images · {states}'
        f'{" · " + changes if changes else ""}</div><div class="scores">{cards}</div></header>'
        '<nav><label>sort <select id="sort"><option value="key">key</option></select></label> '
        '<label><input type="checkbox" id="desc"> descending</label> '
        '<label>show <select id="filter"><option value="all">all</option>'
        '<option value="problems">blocked, failed, low scores</option></select></label> '
        '<span class="pager"><button id="prev">‹</button> <span id="page"></span> '
        '<button id="next">›</button></span></nav><main id="grid"></main>\n'
    )


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
:root { --bg:#f6f6f4; --fg:#1d1d1f; --dim:#77777c; --card:#fff; --line:#e2e2e0; --bad:#c8322b; --warn:#d08a00; }
* { box-sizing: border-box; }
body { margin:0; font:13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg);
       color:var(--fg); }
header { padding:16px 20px 4px; background:var(--card); }
h1 { font-size:18px; margin:0 0 6px; }
.counts { margin-bottom:8px; }
.pill { display:inline-block; padding:1px 8px; margin:0 4px 4px 0; border-radius:10px; background:#ececea; }
.pill.st-failed, .pill.st-blocked { background:#fbe3e1; color:var(--bad); }
.pill.st-cancelled { background:#e8e8f4; }
.scores { display:flex; flex-wrap:wrap; gap:6px 18px; margin-bottom:8px; }
.score { min-width:190px; }
.sname { font-weight:600; }
.snum { color:var(--dim); font-size:12px; }
.hist rect { fill:#8a9bb0; }
.hist text { font-size:9px; fill:var(--dim); }
nav { display:flex; gap:14px; align-items:center; flex-wrap:wrap; position:sticky; top:0; z-index:2;
      background:var(--card); padding:8px 20px; border-bottom:1px solid var(--line); }
.pager button { min-width:28px; }
main { display:grid; grid-template-columns:repeat(auto-fill, minmax(176px, 1fr)); gap:10px; padding:14px 20px; }
.tile { background:var(--card); border:2px solid var(--line); border-radius:8px; padding:7px; overflow:hidden; }
.tile.bad { border-color:var(--bad); }
.tile.low { border-color:var(--warn); }
.thumb { width:100%; aspect-ratio:1; display:flex; align-items:center; justify-content:center; background:#eee;
         border-radius:4px; overflow:hidden; color:var(--dim); font-size:12px; text-align:center; }
.thumb img { width:100%; height:100%; object-fit:contain; image-rendering:auto; }
.tile.bad .thumb { background:repeating-linear-gradient(45deg,#f7dcd9,#f7dcd9 8px,#fbeeed 8px,#fbeeed 16px);
                   color:var(--bad); font-weight:600; }
.key { font-weight:600; margin-top:5px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.meta { color:var(--dim); font-size:11px; }
.tag { display:inline-block; font-size:10px; padding:0 5px; border-radius:6px; background:#ececea; margin-right:3px; }
.tag.bad { background:var(--bad); color:#fff; }
.tag.low { background:var(--warn); color:#fff; }
.sc { display:grid; grid-template-columns:auto 1fr auto 1fr; gap:0 6px; margin-top:3px; font-size:11px;
      font-variant-numeric:tabular-nums; }
.sc .l { color:var(--dim); }
.sc .lowv { color:var(--warn); font-weight:700; }
.err { color:var(--bad); font-size:11px; word-break:break-word; }
.dim { color:var(--dim); }
</style></head><body>
"""

_SCRIPT = """<script>
(function () {
  "use strict";
  var tiles = JSON.parse(document.getElementById("tiles").textContent);
  var grid = document.getElementById("grid"), sort = document.getElementById("sort");
  var desc = document.getElementById("desc"), filter = document.getElementById("filter");
  var pageLabel = document.getElementById("page"), page = 0;
  var present = {};
  tiles.forEach(function (t) { Object.keys(t.s).forEach(function (k) { present[k] = true; }); });
  SCORES.forEach(function (name) {
    if (!present[name]) return;
    var o = document.createElement("option"); o.value = name; o.textContent = name; sort.appendChild(o);
  });
  function bad(t) { return t.st === "blocked" || t.st === "failed" || t.st === "cancelled"; }
  function el(tag, cls, text) {
    var e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text); return e;
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3); }
  function ordered() {
    var list = filter.value === "problems"
      ? tiles.filter(function (t) { return bad(t) || t.low.length; }) : tiles.slice();
    var key = sort.value, sign = desc.checked ? -1 : 1;
    list.sort(function (a, b) {
      if (key === "key") { return sign * (a.k < b.k ? -1 : a.k > b.k ? 1 : a.v - b.v); }
      var x = a.s[key], y = b.s[key];
      if (x === undefined && y === undefined) return 0;
      if (x === undefined) return 1;
      if (y === undefined) return -1;
      return sign * (x - y);
    });
    return list;
  }
  function tile(t) {
    var d = el("div", "tile" + (bad(t) ? " bad" : t.low.length ? " low" : ""));
    var th = el("div", "thumb");
    if (t.src) { var img = el("img"); img.loading = "lazy"; img.alt = t.k; img.src = t.src; th.appendChild(img); }
    else { th.textContent = bad(t) ? t.st : "no image"; }
    d.appendChild(th);
    var key = el("div", "key", t.k + (t.v ? " #" + t.v : "")); key.title = t.p; d.appendChild(key);
    var meta = el("div", "meta");
    if (t.ch) meta.appendChild(el("span", "tag" + (bad(t) ? " bad" : ""), t.ch));
    if (t.st !== "succeeded" && t.st !== t.ch) meta.appendChild(el("span", "tag bad", t.st));
    if (t.low.length) meta.appendChild(el("span", "tag low", "low " + t.low.join(", ")));
    d.appendChild(meta);
    var sc = el("div", "sc");
    [["clip_score", "clip"], ["aesthetic", "aes"], ["sharpness", "sharp"], ["white_background", "white"]]
      .forEach(function (pair) {
        var v = t.s[pair[0]];
        if (v === undefined) return;
        sc.appendChild(el("span", "l", pair[1]));
        sc.appendChild(el("span", t.low.indexOf(pair[0]) >= 0 ? "lowv" : "", fmt(v)));
      });
    if (sc.childNodes.length) d.appendChild(sc);
    if (t.safety && t.safety.indexOf("blocked") === 0) d.appendChild(el("div", "err", t.safety));
    if (t.err) d.appendChild(el("div", "err", t.err));
    return d;
  }
  function render() {
    var list = ordered(), pages = Math.max(1, Math.ceil(list.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    grid.textContent = "";
    var frag = document.createDocumentFragment();
    list.slice(page * PAGE, (page + 1) * PAGE).forEach(function (t) { frag.appendChild(tile(t)); });
    grid.appendChild(frag);
    pageLabel.textContent = "page " + (page + 1) + " of " + pages + " · " + list.length + " tiles";
  }
  document.getElementById("prev").addEventListener("click", function () { page--; render(); window.scrollTo(0, 0); });
  document.getElementById("next").addEventListener("click", function () { page++; render(); window.scrollTo(0, 0); });
  [sort, desc, filter].forEach(function (c) { c.addEventListener("change", function () { page = 0; render(); }); });
  render();
})();
</script>
"""

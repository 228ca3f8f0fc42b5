"""A contact sheet: one self-contained HTML file to look at a job's (or catalogue's) images at once.

Thumbnails are small JPEG data URIs made with Pillow (or, with `link`, the objects' URLs, for jobs too big
to embed); tiles are rendered 500 per page by plain JavaScript from one JSON block (no CDN, works offline),
sortable by any score, filterable to the problems. Blocked images are never shown, only marked. Every
string from the catalogue reaches the page as JSON rendered with `textContent`, or through `html.escape`.

A catalogue's sheet is read by a merchandiser after a nightly run: "what did tonight change, and is what
the shop shows right?". So its filter bar is the latest run's change (current / new / changed / unchanged /
retired / all, each with its count, and the choice kept in the URL's `#show=` so a view can be linked), and
it opens on *current*: the entries the shop still sells, as a shop admin's product list opens on its active
products. Retired entries are never silently gone: their count stays in the bar, one click away, and where
they are shown (*retired*, *all*) they sort after the current ones, below a "retired" divider, greyed out
under a diagonal "retired" band, so a retired image cannot be mistaken for a live one at a glance. A job's
sheet filters by state instead (failed, blocked, low scores). Every tile shows its key and the first two
lines of its prompt as text, the whole prompt in the tooltip.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from contract.storage import Storage
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
    tenant_id: int,
    job: int | None = None,
    catalogue: str | None = None,
    storage: Storage,
    link: bool = False,
    expires: int = 3600,
    read_input: Callable[[str], bytes] | None = None,
) -> int:
    """Write the sheet; returns the number of tiles. Two passes over the ledger: the summary, then tiles.
    `read_input`: how a photo row's `s3://` photo is read for its thumbnail (contract/storage.py `S3Reader`, bounded);
    None: such tiles show the output alone."""
    summary = Summary()
    for row in iter_manifest(session, tenant_id=tenant_id, job=job, catalogue=catalogue):
        summary.add(row)
    low = summary.p10()
    stream.write(_HEAD.replace("{{title}}", html.escape(title)))
    stream.write(_summary_html(title, summary, catalogue=catalogue is not None))
    stream.write('<script id="tiles" type="application/json">[')
    rows = iter_manifest(
        session, tenant_id=tenant_id, job=job, catalogue=catalogue, storage=storage, urls=link, expires=expires
    )
    for n, row in enumerate(rows):
        stream.write(("," if n else "") + script_json(_tile(row, storage, link, low, read_input)))
    stream.write("]</script>\n")
    kind = "job" if catalogue is None else "catalogue"
    stream.write(
        f"<script>const PAGE = {PAGE}; const SCORES = {script_json(list(SCORES))}; "
        f"const KIND = {script_json(kind)};</script>\n"
    )
    stream.write(_SCRIPT)
    stream.write("</body></html>\n")
    return summary.rows


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, no HTML comment openers."""
    return (
        json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _tile(
    row: ManifestRow, storage: Storage, link: bool, low: dict[str, float], read_input: Callable[[str], bytes] | None
) -> dict[str, Any]:
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
        "in": _input_thumbnail(row, read_input),
    }


def _input_thumbnail(row: ManifestRow, read_input: Callable[[str], bytes] | None = None) -> str | None:
    """A photo row's photo as a thumbnail beside its output; only when the file still holds the bytes checked at
    submit (its sha256), so the sheet shows what the item was made from and never another file at that path."""
    if row.input is None or row.input_sha256 is None:
        return None
    try:
        if row.input.startswith("s3://"):
            if read_input is None:
                return None
            data = read_input(row.input)
        else:
            with open(row.input, "rb") as stream:
                data = stream.read()
        if hashlib.sha256(data).hexdigest() != row.input_sha256:
            return None
        return thumbnail(data)
    except Exception:  # noqa: BLE001 (a photo gone or unreadable: the tile shows the output alone)
        return None


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


def _summary_html(title: str, summary: Summary, *, catalogue: bool) -> str:
    states = "".join(
        f'<span class="pill st-{html.escape(k)}">{html.escape(k)} <b>{v}</b></span>'
        for k, v in sorted(summary.states.items())
    )
    cards = "".join(
        f'<div class="score"><div class="sname">{html.escape(name)}</div>'
        f'<div class="snum">median <b>{percentile(v, 50):.4g}</b> · p10 {percentile(v, 10):.4g} · '
        f'p90 {percentile(v, 90):.4g} <span class="dim">(n={len(v)})</span></div>{histogram_svg(v)}</div>'
        for name, v in sorted(summary.scores.items())
    )
    return (
        f'<header><h1>{html.escape(title)}</h1><div class="counts">{summary.rows} images · {states}</div>'
        f'<div class="scores">{cards}</div></header>'
        f"<nav>{_filters_html(summary, catalogue=catalogue)}"
        '<label>sort <select id="sort"><option value="key">key</option></select></label> '
        '<label><input type="checkbox" id="desc"> descending</label> '
        '<span class="pager"><button id="prev">‹</button> <span id="page"></span> '
        '<button id="next">›</button></span></nav><main id="grid"></main>\n'
    )


_CHANGES = ("new", "changed", "unchanged", "retired")  # a catalogue entry's change in the latest run
_ENDED = ("failed", "blocked", "cancelled")  # replace the change when the serving item ended so


def _filters(summary: Summary, *, catalogue: bool) -> list[tuple[str, str]]:
    """(value, label) of the filter bar. The script counts each filter's tiles with the predicate it
    filters by, so a count is always the number of tiles its view shows."""
    if catalogue:
        ended = [(c, c) for c in _ENDED if summary.changes[c]]
        return [("current", "current"), *((c, c) for c in _CHANGES), *ended, ("all", "all"), ("problems", "problems")]
    ended = [(s, s) for s in _ENDED if s != "cancelled" or summary.states[s]]
    return [("all", "all"), ("succeeded", "succeeded"), *ended, ("low", "low scores"), ("problems", "problems")]


def _filters_html(summary: Summary, *, catalogue: bool) -> str:
    """Radio buttons styled as tabs: keyboard and screen-reader friendly, no script needed to choose."""
    default = "current" if catalogue else "all"
    chips = "".join(
        f'<label class="chip f-{value}"><input type="radio" name="show" value="{value}"'
        f'{" checked" if value == default else ""}> {html.escape(label)} <b class="n"></b></label>'
        for value, label in _filters(summary, catalogue=catalogue)
    )
    return f'<div id="show" class="chips" role="radiogroup" aria-label="show">{chips}</div>'


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
:root { --bg:#f6f6f4; --fg:#1d1d1f; --dim:#77777c; --card:#fff; --line:#e2e2e0; --bad:#c8322b; --warn:#d08a00;
        --new:#1f8a45; --changed:#2f66c0; }
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
.chips { display:flex; flex-wrap:wrap; gap:4px; }
.chip { position:relative; display:inline-flex; align-items:center; gap:4px; padding:3px 10px;
        border:1px solid var(--line); border-radius:14px; cursor:pointer; user-select:none;
        background:var(--card); white-space:nowrap; }
.chip input { position:absolute; opacity:0; width:1px; height:1px; margin:0; }
.chip .n { font-weight:600; font-variant-numeric:tabular-nums; }
.chip.on { background:var(--fg); border-color:var(--fg); color:#fff; }
.chip:has(input:focus-visible) { outline:2px solid #4a7bd0; outline-offset:1px; }
.chip.f-new .n { color:var(--new); } .chip.f-changed .n { color:var(--changed); }
.chip.f-failed .n, .chip.f-blocked .n, .chip.f-problems .n { color:var(--bad); }
.chip.f-low .n { color:var(--warn); }
.chip.on .n { color:#fff; }
.chip.zero { color:var(--dim); }
main { display:grid; grid-template-columns:repeat(auto-fill, minmax(176px, 1fr)); gap:10px; padding:14px 20px; }
.tile { position:relative; background:var(--card); border:2px solid var(--line); border-radius:8px; padding:7px;
        overflow:hidden; }
.tile.ch-new { border-color:var(--new); }
.tile.ch-changed { border-color:var(--changed); }
.tile.bad { border-color:var(--bad); }
.tile.low { border-color:var(--warn); }
.thumb { position:relative; width:100%; aspect-ratio:1; display:flex; align-items:center; justify-content:center;
         background:#eee; border-radius:4px; overflow:hidden; color:var(--dim); font-size:12px; text-align:center; }
.thumb img { width:100%; height:100%; object-fit:contain; image-rendering:auto; }
.thumb.pair { display:grid; grid-template-columns:1fr 1fr; gap:3px; background:#ddd; }
.thumb.pair img { min-width:0; background:#eee; }
.tile.bad .thumb { background:repeating-linear-gradient(45deg,#f7dcd9,#f7dcd9 8px,#fbeeed 8px,#fbeeed 16px);
                   color:var(--bad); font-weight:600; }
.tile.retired { background:#ecebe8; border:2px dashed #b5b4b0; }
.tile.retired .thumb img { filter:grayscale(1) contrast(.8); opacity:.45; }
.tile.retired .key, .tile.retired .title { color:var(--dim); }
.ribbon { position:absolute; left:-25%; right:-25%; top:44%; transform:rotate(-30deg); background:rgba(60,60,64,.88);
          color:#fff; font-weight:700; font-size:13px; letter-spacing:.2em; text-transform:uppercase;
          text-align:center; padding:3px 0; pointer-events:none; }
.divider { grid-column:1 / -1; display:flex; align-items:center; gap:10px; color:var(--dim); font-weight:600;
           margin-top:8px; }
.divider::after { content:""; flex:1; border-top:2px dashed #b5b4b0; }
.key { font-weight:600; margin-top:5px; overflow-wrap:anywhere; display:-webkit-box; -webkit-box-orient:vertical;
       -webkit-line-clamp:2; line-clamp:2; overflow:hidden; }
.title { font-size:12px; line-height:16px; min-height:32px; overflow-wrap:anywhere; display:-webkit-box;
         -webkit-box-orient:vertical; -webkit-line-clamp:2; line-clamp:2; overflow:hidden; }
.meta { color:var(--dim); font-size:11px; margin-top:2px; }
.tag { display:inline-block; font-size:10px; padding:0 5px; border-radius:6px; background:#ececea; margin-right:3px; }
.tag.bad { background:var(--bad); color:#fff; }
.tag.low { background:var(--warn); color:#fff; }
.tag.ch-new { background:var(--new); color:#fff; }
.tag.ch-changed { background:var(--changed); color:#fff; }
.tag.ch-retired { background:#55555a; color:#fff; }
.sc { display:grid; grid-template-columns:auto 1fr auto 1fr; gap:0 6px; margin-top:3px; font-size:11px;
      font-variant-numeric:tabular-nums; }
.sc .l { color:var(--dim); }
.sc .lowv { color:var(--warn); font-weight:700; }
.err { color:var(--bad); font-size:11px; word-break:break-word; }
.empty { grid-column:1 / -1; color:var(--dim); padding:30px 0; text-align:center; }
.dim { color:var(--dim); }
</style></head><body>
"""

_SCRIPT = """<script>
(function () {
  "use strict";
  var tiles = JSON.parse(document.getElementById("tiles").textContent);
  var grid = document.getElementById("grid"), sort = document.getElementById("sort");
  var desc = document.getElementById("desc");
  var radios = Array.prototype.slice.call(document.querySelectorAll('#show input[name="show"]'));
  var pageLabel = document.getElementById("page"), page = 0;
  var present = {};
  tiles.forEach(function (t) { Object.keys(t.s).forEach(function (k) { present[k] = true; }); });
  SCORES.forEach(function (name) {
    if (!present[name]) return;
    var o = document.createElement("option"); o.value = name; o.textContent = name; sort.appendChild(o);
  });
  function bad(t) { return t.st === "blocked" || t.st === "failed" || t.st === "cancelled"; }
  function retired(t) { return t.ch === "retired"; }
  var named = {
    all: function () { return true; },
    current: function (t) { return !retired(t); },
    low: function (t) { return !retired(t) && t.low.length > 0; },
    problems: function (t) { return !retired(t) && (bad(t) || t.low.length > 0); }
  };
  function predicate(name) {
    if (named[name]) return named[name];
    return KIND === "catalogue" ? function (t) { return t.ch === name; } : function (t) { return t.st === name; };
  }
  function chosen() {
    for (var i = 0; i < radios.length; i++) { if (radios[i].checked) return radios[i].value; }
    return "all";
  }
  radios.forEach(function (r) {
    var n = tiles.filter(predicate(r.value)).length;
    r.parentNode.querySelector(".n").textContent = String(n);
    if (!n) r.parentNode.classList.add("zero");
  });
  function fromHash() {
    var m = /(?:^#|&)show=([a-z]+)/.exec(location.hash);
    if (!m) return;
    radios.forEach(function (r) { if (r.value === m[1]) r.checked = true; });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text); return e;
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3); }
  function ordered() {
    var list = tiles.filter(predicate(chosen()));
    var key = sort.value, sign = desc.checked ? -1 : 1;
    list.sort(function (a, b) {
      var r = retired(a) - retired(b);  // current first, whatever the order
      if (r) return r;
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
    var cls = "tile" + (bad(t) ? " bad" : t.low.length ? " low" : "");
    if (t.ch) cls += " ch-" + t.ch.replace(/[^a-z]/g, "") + (retired(t) ? " retired" : "");
    var d = el("div", cls);
    d.setAttribute("data-change", t.ch || "");
    d.setAttribute("data-state", t.st || "");
    var th = el("div", t.in ? "thumb pair" : "thumb");
    if (t.in) {  // a photo row: the product photo beside what was made from it
      var photo = el("img"); photo.alt = t.k + " (photo)"; photo.title = "photo"; photo.src = t.in;
      th.appendChild(photo);
    }
    if (t.src) { var img = el("img"); img.loading = "lazy"; img.alt = t.k; img.src = t.src; th.appendChild(img); }
    else if (t.in) { th.appendChild(el("span", "", bad(t) ? t.st : "no image")); }
    else { th.textContent = bad(t) ? t.st : "no image"; }
    if (retired(t)) th.appendChild(el("span", "ribbon", "retired"));
    d.appendChild(th);
    var name = t.k + (t.v ? " #" + t.v : "");
    var key = el("div", "key", name); key.title = name; d.appendChild(key);
    var title = el("div", "title", t.p); title.title = t.p; d.appendChild(title);
    var meta = el("div", "meta");
    if (t.ch) meta.appendChild(el("span", "tag ch-" + t.ch.replace(/[^a-z]/g, "") + (bad(t) ? " bad" : ""), t.ch));
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
    radios.forEach(function (r) { r.parentNode.classList.toggle("on", r.checked); });
    var list = ordered(), pages = Math.max(1, Math.ceil(list.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    grid.textContent = "";
    var frag = document.createDocumentFragment(), first = page * PAGE;
    var retiredCount = list.filter(retired).length;
    list.slice(first, first + PAGE).forEach(function (t, i) {
      var before = list[first + i - 1];
      if (retired(t) && before && !retired(before)) {
        frag.appendChild(el("div", "divider", "retired · no longer in the catalogue (" + retiredCount + ")"));
      }
      frag.appendChild(tile(t));
    });
    if (!list.length) frag.appendChild(el("div", "empty", "nothing to show here"));
    grid.appendChild(frag);
    var hidden = tiles.filter(retired).length - retiredCount;
    pageLabel.textContent = "page " + (page + 1) + " of " + pages + " · " + list.length + " tiles" +
      (hidden ? " · " + hidden + " retired not shown" : "");
  }
  function choose() {
    page = 0;
    try { history.replaceState(null, "", "#show=" + chosen()); } catch (e) { /* a sandboxed viewer */ }
    render();
  }
  document.getElementById("prev").addEventListener("click", function () { page--; render(); window.scrollTo(0, 0); });
  document.getElementById("next").addEventListener("click", function () { page++; render(); window.scrollTo(0, 0); });
  [sort, desc].forEach(function (c) { c.addEventListener("change", function () { page = 0; render(); }); });
  radios.forEach(function (r) { r.addEventListener("change", choose); });
  window.addEventListener("hashchange", function () { fromHash(); page = 0; render(); });
  fromHash();
  render();
})();
</script>
"""

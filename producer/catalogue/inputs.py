"""Per-row photos (issue 25): the `image` and `mask` columns of background and restyle rows, checked at submit.

An input is a path under one of the submitting tenant's input roots (its `source_roots`, operator-set with
`pixelmill tenants set NAME --source-root DIR`; the rule of producer/source_roots.py: symlinks and `..` resolved
before the comparison), or an `s3://bucket/key` under one of its s3 roots (`s3://bucket/prefix/`), never another URL.
A relative path is read under the tenant's first local root; an s3 object with the PIXELMILL_S3_* settings
(`Limits.fetch`, contract/storage.py `S3Reader`), and the worker reads it again from the store at run time, checking
its sha256. The file is read
once (at most `Limits.input_bytes`), hashed, and decoded from those bytes, so what is hashed is what was checked:
PNG, JPEG or WebP only; the header's size is checked against `Limits.input_pixels` and the largest output side
BEFORE any pixel is decoded (a 50,000 x 50,000 PNG is a few hundred bytes and gigabytes once decoded); then the
whole image is decoded, so a truncated file is refused here and not on a GPU. A mask has the photo's size.

The output is the photo's size rounded up to a multiple of 8 (at least 64), the photo centred on it
(`placement`), unless the row's own `size` says otherwise (the photo centred on it, never scaled).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from contract.params import MAX_SIDE, MIN_SIDE, MODES, STRENGTH_DEFAULT, ModeName
from producer.source_roots import LocalPathRefused, input_location

Fetch = Callable[[str, int], bytes]  # an s3:// location's bytes, at most so many (`Limits.fetch`)

FORMATS = ("PNG", "JPEG", "WEBP")
INPUT_COLUMNS = ("image", "mask", "mode", "strength")  # the per-row columns of photo rows


class InputProblem(ValueError):
    """Why a photo or mask cannot be used; the message names what to do."""


@dataclass(frozen=True)
class Checked:
    """An input as checked: the resolved path that was read, the sha256 of its bytes, its size and alpha."""

    path: str
    sha256: str
    width: int
    height: int
    alpha: bool


def output_side(side: int) -> int:
    """An output side for a photo side: rounded up to a multiple of 8, at least MIN_SIDE."""
    return max(MIN_SIDE, -(-side // 8) * 8)


def placement(width: int, height: int) -> tuple[int, int, int, int]:
    """(output width, output height, left, top): the photo centred on its rounded-up canvas."""
    out_w, out_h = output_side(width), output_side(height)
    return out_w, out_h, (out_w - width) // 2, (out_h - height) // 2


def _resolve(value: str, roots: Sequence[str]) -> str:
    text = value.strip()
    try:
        return input_location(text, roots)
    except LocalPathRefused as refused:
        raise InputProblem(
            {
                "url": f"{text[:80]!r} is a URL; give a path under the tenant's input root or an s3:// key under its "
                "s3 root (other URLs are never read)",
                "nul": "contains a NUL byte; give a path under the tenant's input root",
                "no root": "this tenant has no input root: an operator sets one with "
                "`pixelmill tenants set NAME --source-root DIR`",
                "outside": f"{text[:200]!r} is not under an input root of this tenant",
            }[refused.why]
        ) from None


def _fetch(location: str, cap: int, fetch: Fetch | None) -> bytes:
    from contract.storage import FetchError

    if fetch is None:
        raise InputProblem(f"{location[:200]!r}: s3 inputs are not read here (no S3 settings); give a local path")
    try:
        data = fetch(location, cap)
    except FetchError as exc:
        raise InputProblem(
            {
                "missing": f"{location[:200]!r} does not exist",
                "too large": f"is over {cap:,} bytes; shrink it or raise PIXELMILL_INPUT_MAX_BYTES",
            }.get(exc.why, f"{location[:200]!r} cannot be read: {exc.detail}")
        ) from None
    if not data:
        raise InputProblem("is empty, not an image")
    return data


def _read(path: str, cap: int, fetch: Fetch | None = None) -> bytes:
    if path.startswith("s3://"):
        return _fetch(path, cap, fetch)
    if not os.path.lexists(path):
        raise InputProblem(f"{path!r} does not exist")
    if not os.path.isfile(path):  # a directory, a FIFO (which would block the read), a device
        raise InputProblem(f"{path!r} is not a regular file")
    try:
        with open(path, "rb") as stream:
            data = stream.read(cap + 1)
    except OSError as exc:
        raise InputProblem(f"{path!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise InputProblem(f"is over {cap:,} bytes; shrink it or raise PIXELMILL_INPUT_MAX_BYTES")
    if not data:
        raise InputProblem("is empty, not an image")
    return data


def check_input(
    value: str, roots: Sequence[str], *, max_bytes: int, max_pixels: int, fetch: Fetch | None = None
) -> Checked:
    """The input at `value` (see the module's rules), or InputProblem saying what is wrong. `fetch` reads s3 inputs."""
    from PIL import Image

    path = _resolve(value, roots)
    data = _read(path, max_bytes, fetch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputProblem(f"declares more pixels than the bomb guard allows (over {max_pixels:,})") from None
        except Exception:  # noqa: BLE001 (Pillow raises many types for files that are not images)
            raise InputProblem("is not a PNG, JPEG or WebP image") from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise InputProblem(
                    f"is {width:,}x{height:,} pixels, over {max_pixels:,}; shrink it or raise "
                    "PIXELMILL_INPUT_MAX_PIXELS"
                )
            if max(width, height) > MAX_SIDE or min(width, height) < 1:
                raise InputProblem(f"is {width}x{height}; each side must be 1 to {MAX_SIDE} pixels (crop or shrink it)")
            try:
                image.load()  # every pixel decoded: a truncated or corrupt file fails here
            except Exception as exc:  # noqa: BLE001
                raise InputProblem(f"cannot be decoded ({str(exc)[:120] or type(exc).__name__}): truncated?") from None
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return Checked(path, hashlib.sha256(data).hexdigest(), width, height, alpha)


@dataclass(frozen=True)
class PhotoRow:
    """A row's photo fields once checked: its mode, restyle strength, output size and `items.inputs`."""

    mode: ModeName
    strength: float | None
    width: int  # the output: the photo's size rounded up (`placement`)
    height: int
    inputs: dict[str, str] | None
    photo_size: tuple[int, int] = (0, 0)  # the photo's own

    def sized(self, width: int, height: int) -> str | None:
        """Why the photo cannot sit unscaled on a `width` x `height` output (a row's `size`), or None."""
        if self.photo_size[0] <= width and self.photo_size[1] <= height:
            return None
        w, h = self.photo_size
        return f"is {width}x{height}, smaller than the row's photo ({w}x{h}): the photo is never scaled; crop it"

    @property
    def fields(self) -> tuple[str, float | None, dict[str, str] | None]:
        """(mode, strength, inputs): the tail of a catalogue `Row`."""
        return self.mode, self.strength, self.inputs


def parse_mode(text: str) -> ModeName:
    value = text.strip().lower()
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {text[:40]!r}")


def parse_strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"strength must be a number from 0.05 to 1, got {text[:40]!r}") from None
    if not 0.05 <= value <= 1:
        raise ValueError(f"strength must be a number from 0.05 to 1, got {text[:40]!r}")
    return value


def photo_row(
    mode: ModeName,
    strength: float | None,
    image: str | None,
    mask: str | None,
    roots: Sequence[str],
    limits: tuple[int, int],
    fetch: Fetch | None = None,
) -> tuple[PhotoRow | None, list[tuple[str, str]]]:
    """A row's photo fields, or the (field, message) problems found; text rows without photos give (None, [])."""
    problems: list[tuple[str, str]] = []
    if mode == "text":
        return None, problems
    if image is None:
        return None, [("image", f"mode {mode} needs a photo: give the row an image (a path under the input root)")]
    if mask is not None and mode != "background":
        problems.append(("mask", "a mask applies to mode background only"))
    checked: dict[str, Checked] = {}
    for field, value in (("image", image), ("mask", mask if mode == "background" else None)):
        if value is None:
            continue
        try:
            checked[field] = check_input(value, roots, max_bytes=limits[0], max_pixels=limits[1], fetch=fetch)
        except InputProblem as exc:
            problems.append((field, str(exc)))
    photo, shape = checked.get("image"), checked.get("mask")
    if photo is not None and shape is not None and (shape.width, shape.height) != (photo.width, photo.height):
        problems.append(
            ("mask", f"is {shape.width}x{shape.height}, the photo {photo.width}x{photo.height}: must be the same size")
        )
    if problems or photo is None:
        return None, problems
    inputs = {"image": photo.path, "image_sha256": photo.sha256}
    if shape is not None:
        inputs |= {"mask": shape.path, "mask_sha256": shape.sha256}
    width, height, _, _ = placement(photo.width, photo.height)
    used = (strength if strength is not None else STRENGTH_DEFAULT) if mode == "restyle" else None
    return PhotoRow(mode, used, width, height, inputs, (photo.width, photo.height)), []


class PhotoColumns:
    """The photo columns of one catalogue (`image`, `mask`, `mode`, `strength`, or the columns `--column` maps them
    to) and the job's mode, strength and input roots; built once per read, consulted per row."""

    def __init__(
        self,
        mode: ModeName,
        strength: float,
        roots: Sequence[str],
        limits: tuple[int, int],
        columns: Mapping[str, tuple[str, int]],
        fetch: Fetch | None = None,
    ) -> None:
        self.mode, self.strength, self.roots, self.limits, self.columns = mode, strength, tuple(roots), limits, columns
        self.fetch = fetch

    @classmethod
    def of(
        cls,
        job: tuple[ModeName, float, Sequence[str]],
        mapped: Mapping[str, str | None],
        index: Mapping[str, int],
        limits: tuple[int, int],
        fetch: Fetch | None = None,
    ) -> PhotoColumns | None:
        """None when no row can be a photo row (text mode and no `mode` column): the reader's fast path stays."""
        columns = {
            name: (column, index[column])
            for name in INPUT_COLUMNS
            if (column := mapped.get(name)) is not None and column in index
        }
        if job[0] == "text" and "mode" not in columns:
            return None
        return cls(job[0], job[1], job[2], limits, columns, fetch)

    def _text(self, name: str, cells: Sequence[object]) -> tuple[str, str] | None:
        found = self.columns.get(name)
        if found is None:
            return None
        value = cells[found[1]]
        return (found[0], value) if isinstance(value, str) and value.strip() else None

    def row(self, cells: Sequence[object], problem: Callable[[str, str], None]) -> tuple[bool, PhotoRow | None]:
        """(ok, the row's photo fields): ok False after `problem(column, message)` for each problem; a text row
        gives (True, None) and its `image`/`mask` cells are left alone (they may be template fields)."""
        mode, strength, ok = self.mode, self.strength, True
        for name, parse in (("mode", parse_mode), ("strength", parse_strength)):
            cell = self._text(name, cells)
            if cell is None:
                continue
            try:
                parsed = parse(cell[1])
            except ValueError as exc:
                problem(cell[0], str(exc))
                ok = False
                continue
            if isinstance(parsed, float):
                strength = parsed
            else:
                mode = parsed
        if not ok or mode == "text":
            return ok, None
        image, mask = self._text("image", cells), self._text("mask", cells)
        found, problems = photo_row(
            mode, strength, image[1] if image else None, mask[1] if mask else None, self.roots, self.limits, self.fetch
        )
        names = {name: self.columns.get(name, (name, 0))[0] for name in ("image", "mask")}
        for name, message in problems:
            problem(names[name], message)
        return not problems, found

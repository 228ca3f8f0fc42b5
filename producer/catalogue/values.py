"""Cell values and templates: the parsers of per-row overrides, the job's template (named fields only), and
the text checks a key or prompt needs before it can be stored."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Mapping

from contract.identity import SEED_LIMIT, object_key
from producer.catalogue.problems import UsageError

SEED_MAX = SEED_LIMIT - 1


TOKEN_OVERHEAD = 2  # CLIP's start and end tokens count against the model's limit


_UINT_RE = re.compile(r"\s*\d+\s*")


# A lone surrogate: JSON may escape one ("\ud800"), and a decoder with surrogateescape leaves one per bad byte,
# but it is no character: no UTF-8 encoder, database or object store takes it.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


# CLIP's pre-tokenizer: letter runs, single digits, punctuation runs. Each is at least one BPE token.
_PRETOKEN_RE = re.compile(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def _parse_int(text: str, low: int, high: int) -> int:
    """A whole number in [low, high]; long text is refused before int() (its cost grows with the digits)."""
    if len(text) > 40 or not _UINT_RE.fullmatch(text) or not (low <= int(text) <= high):
        raise ValueError(f"must be a whole number from {low} to {high}, got {text[:40]!r}")
    return int(text)


def parse_steps(text: str) -> int:
    """Denoising steps: more than 200 buys nothing and costs a lot."""
    return _parse_int(text, 1, 200)


def parse_images(text: str) -> int:
    """Variants per row: 16 at most, so one row cannot dominate a job."""
    return _parse_int(text, 1, 16)


def parse_seed(text: str) -> int:
    """A seed written as text (a catalogue cell): a whole number from 0 to SEED_MAX."""
    return _parse_int(text, 0, SEED_MAX)


def check_seed(value: int) -> int:
    """A job seed (`--seed`): the same range as row seeds, so both fit a signed BIGINT and torch."""
    if type(value) is not int or not (0 <= value <= SEED_MAX):
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return value


def parse_guidance(text: str) -> float:
    """A finite CFG scale in [0, 50]; '_' digit separators are refused as a likely typo."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 50) or "_" in text:
        raise ValueError(f"must be a number from 0 to 50, got {text[:40]!r}")
    return value


def normalise(text: str) -> str:
    """Collapse whitespace runs, so stray spaces or newlines never change an item's content hash."""
    return " ".join(text.split())


def estimate_tokens(prompt: str) -> int:
    """A lower bound on the CLIP tokens of `prompt`, start and end tokens included. CLIP's pre-tokenizer
    splits text into letter runs, single digits and punctuation runs, and BPE makes at least one token of
    each; ordinary English words are one token, rarer ones more. It needs no tokenizer files."""
    return len(_PRETOKEN_RE.findall(prompt)) + TOKEN_OVERHEAD


def excerpt(value: str, limit: int = 60) -> str:
    """A value for a message: quoted, cut to `limit` characters with '...' if longer."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def key_bytes(key: str) -> int:
    """Bytes the item key takes in an object key, percent-encoded as `contract.identity.object_key` does."""
    return len(object_key(0, key, 0, "")) - len("jobs/0//0.")


def surrogate_problem(text: str | None) -> str | None:
    """Why `text` cannot be stored (it holds a lone surrogate), or None."""
    found = _SURROGATE_RE.search(text) if text else None
    if found is None:
        return None
    return (
        f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start() + 1}, which is not "
        "Unicode text (a broken \\ud800-\\udfff escape or a mis-decoded file); fix or remove it"
    )


def invisible(key: str) -> str | None:
    """The first character of `key` a person cannot see (Unicode format characters such as U+200B ZERO WIDTH
    SPACE or U+202E RIGHT-TO-LEFT OVERRIDE, and line/paragraph separators), as `U+XXXX (NAME)`, or None."""
    if key.isascii():
        return None
    for char in key:
        if unicodedata.category(char) in ("Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"
    return None


def template_fields(template: str) -> list[str]:
    """Named fields of a str.format template, in order, without repeats. Anything else is a UsageError:
    positional, attribute, index, conversion and format-spec fields would make a catalogue value
    executable-ish or its meaning surprising."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"bad template {template!r}: {exc} (write '{{{{' or '}}}}' for literal braces)") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
        if name == "" or name.isdigit():
            problem = "positional fields are not allowed; name a column, e.g. {title}"
        elif "." in name or "[" in name:
            problem = "attribute or index access is not allowed; name a column, e.g. {title}"
        elif conversion or spec:
            problem = "conversions and format specs are not allowed; use a plain {column}"
        elif not name.strip():
            problem = "field names must not be blank"
        else:
            if name not in names:
                names.append(name)
            continue
        raise UsageError(f"bad template field {shown} in {template!r}: {problem}")
    return names


def positional(template: str) -> str:
    """`template` with its named fields as positions ({title} -> {0}), for str.format(*values): no dict per
    row. Literal braces stay escaped; only plain named fields exist (checked by template_fields)."""
    names = template_fields(template)
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            parts.append("{" + str(names.index(name)) + "}")
    return "".join(parts)


def blank_values_show(template: str) -> bool:
    """Whether a whitespace-only value in any field of `template` leaves a double, leading or trailing space
    in the filled text (every field sits at an end of the template or next to a literal space)."""
    parsed = list(string.Formatter().parse(template))
    for i, (literal, name, _spec, _conversion) in enumerate(parsed):
        if name is None:
            continue
        after = parsed[i + 1][0] if i + 1 < len(parsed) else ""
        at_end = i + 1 == len(parsed) or (i + 2 == len(parsed) and not after and parsed[i + 1][1] is None)
        if not ((i == 0 and not literal) or literal.endswith(" ") or after.startswith(" ") or at_end):
            return False
    return True


def render(template: str, row: Mapping[str, str]) -> str:
    """The template filled from `row`, whitespace-normalised. A missing field raises KeyError;
    values are inserted literally (braces in a value are not re-interpreted)."""
    names = template_fields(template)  # checked: only plain named fields, so format_map is safe
    return normalise(template.format_map({name: str(row[name]) for name in names}))

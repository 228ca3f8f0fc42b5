"""Other readings of a prompt where letters are drawn with symbols ("|\\|", "()", "><", "®") or spelt one by one
between punctuation ("n+u+d+e", "s>e>x", "k!k!k"); `PromptFilter.check` reads each as well as the prompt.

Only pieces of text that look drawn are rewritten: a run of non-space characters holding a symbol sequence of two
or more characters, or a one-character symbol between two other characters ("4©r"), or single letters each set
off by punctuation (three or more). "(red, M)", "3/4 inch", "Acme®" and "S/M" stay as they are, or are read
again and found clean. Digits and `$ @ ! |` are left to the leetspeak reading that follows (`normalise`)."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable

import ahocorasick

# A symbol sequence → the letters it may draw (first: the usual reading; second, where given: the other one).
GLYPHS: dict[str, str] = {
    "|\\|": "n",
    "/\\/": "n",
    "^/": "n",
    "[\\]": "n",
    "|\\/|": "m",
    "/\\/\\": "m",
    "^^": "m",
    "|v|": "m",
    "|\\/\\|": "m",
    "/\\": "a",
    "/-\\": "a",
    "^": "a",
    "|3": "b",
    "|8": "b",
    "ß": "b",
    "(": "c",
    "©": "c",
    "¢": "c",
    "<": "c",
    "[": "c",
    "|)": "d",
    "|>": "dp",
    "cl": "d",
    "€": "e",
    "£": "el",
    "[-": "e",
    "|=": "f",
    "ƒ": "f",
    "(_+": "g",
    "(_-": "g",
    "|-|": "h",
    "#": "h",
    "}{": "hx",
    "]-[": "h",
    ")-(": "h",
    "][": "i",
    "|<": "k",
    "|{": "k",
    "|(": "k",
    "|_": "l",
    "()": "o",
    "[]": "o",
    "<>": "o",
    "{}": "o",
    "|*": "p",
    "|o": "p",
    "|°": "p",
    "®": "r",
    "|2": "r",
    "я": "r",
    "§": "s",
    "†": "t",
    "+": "t",
    "|_|": "u",
    "\\_/": "u",
    "(_)": "u",
    "µ": "u",
    "\\/": "v",
    "\\/\\/": "w",
    "\\^/": "w",
    "vv": "w",
    "><": "x",
    ")(": "x",
    "`/": "y",
    "¥": "y",
    "7_": "z",
    "2": "2z",
}

_SYMBOLS = frozenset(c for key in GLYPHS for c in key if not c.isalnum())

_PUNCT = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~·•°¡¿§†‡¦«»×÷")

# Cheap test of a whole prompt (explicit classes: negated Unicode classes cost ten times as much): a symbol that
# starts a drawn letter after a letter, digit or symbol, or before another symbol; or one letter between two
# punctuation marks ("n+u+d+e"). "-" and "_" start no drawn letter ("t-shirt", "1.5-2").
_SPELT_PUNCT = re.compile(f"[{_PUNCT}][^\\W_][{_PUNCT}]")

_START_CHARS = tuple(sorted({key[0] for key in GLYPHS if not key[0].isalnum()}))

_BEFORE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + "".join(_SYMBOLS))


_ANY_START = re.compile(f"[{re.escape(''.join(_START_CHARS))}]")

_ALONE = frozenset(key for key in GLYPHS if len(key) == 1 and not key.isalnum())  # "(" is "c"; "/" is nothing


def candidate(prompt: str) -> bool:
    """Whether a prompt may hold drawn or spelt letters (see above): one search of a small class for most
    prompts, then a look at each symbol's neighbours."""
    for found in _ANY_START.finditer(prompt):
        index, char = found.start(), found.group()
        after = prompt[index + 1 : index + 2]
        if (after and after in _SYMBOLS) or (char in _ALONE and index and prompt[index - 1] in _BEFORE):
            return True
    return _SPELT_PUNCT.search(prompt) is not None


_SEQUENCE = re.compile("|".join(re.escape(k) for k in sorted(GLYPHS, key=len, reverse=True)), re.IGNORECASE)

_CHUNK = re.compile(r"\S+")

_SPELT = re.compile(r"[^\W_](?:[^\w\s]{1,2}[^\W_]){2,}")

_EDGE = ",.;:!?\"'"

# Letters spelt out by name ("kay kay kay"): three or more in a row are read as the letters.
LETTER_NAMES = {
    "ay": "a", "bee": "b", "cee": "c", "dee": "d", "ee": "e", "ef": "f", "eff": "f", "gee": "g", "aitch": "h",
    "eye": "i", "jay": "j", "kay": "k", "el": "l", "ell": "l", "em": "m", "en": "n", "oh": "o", "pee": "p",
    "cue": "q", "queue": "q", "ar": "r", "ess": "s", "tee": "t", "you": "u", "vee": "v", "ex": "x", "why": "y",
    "zee": "z", "zed": "z",
}  # fmt: skip

_NAMES = "|".join(sorted(LETTER_NAMES, key=len, reverse=True))

_NAME_AUTOMATON = ahocorasick.Automaton()  # three letter names anywhere: only then is `_SPELT_NAMES` run
for _name in LETTER_NAMES:
    _NAME_AUTOMATON.add_word(f" {_name} ", _name)
_NAME_AUTOMATON.make_automaton()

_SPELT_NAMES = re.compile(rf"\b(?:{_NAMES})(?:[\s.\-]+(?:{_NAMES})){{2,}}\b", re.IGNORECASE)


def _drawn(chunk: str) -> bool:
    """Whether a run of non-space characters holds a drawn letter: a sequence of 2+ symbols, or one symbol with
    other characters on both sides."""
    for found in _SEQUENCE.finditer(chunk):
        key = found.group()
        if key.isalnum():
            continue
        if len(key) >= 2 or (0 < found.start() and found.end() < len(chunk)):
            return True
    return False


# `_SEQUENCE` ignores case the way `re` does: "µ" (micro sign) also matches Greek "Μ" and "μ", which `str.lower`
# does not turn back into "µ"; every such form is keyed here.
_GLYPH_OF = {**{key.upper().lower(): value for key, value in GLYPHS.items()}, **GLYPHS}


def _read(chunk: str, which: int) -> str:
    def letter(found: re.Match[str]) -> str:
        options = _GLYPH_OF[found.group().lower()]
        return options[min(which, len(options) - 1)]

    return _SEQUENCE.sub(letter, chunk)


_BY_FIRST: dict[str, list[str]] = {}
for _key in sorted(GLYPHS, key=len, reverse=True):
    _BY_FIRST.setdefault(_key[0], []).append(_key)

READINGS_CAP = 64  # readings of one drawn piece kept (the ambiguity of "|)" or "|" + ")" is spelt out)


@functools.lru_cache(maxsize=4096)
def readings(chunk: str) -> tuple[str, ...]:
    """Every way of reading a drawn piece ("|<" as "k", or "|" and "<" kept for the leetspeak reading), longest
    symbols first, at most `READINGS_CAP`."""
    low = chunk.lower()
    suffixes: list[list[str]] = [[] for _ in range(len(chunk))] + [[""]]
    for index in range(len(chunk) - 1, -1, -1):
        options: list[str] = []
        for key in _BY_FIRST.get(low[index], ()):
            if low.startswith(key, index):
                options += [letter + rest for letter in GLYPHS[key] for rest in suffixes[index + len(key)]]
        options += [chunk[index] + rest for rest in suffixes[index + 1]]
        suffixes[index] = list(dict.fromkeys(options))[:READINGS_CAP]
    return tuple(suffixes[0])


def alternates(prompt: str, known: Callable[[str], str] | None = None, tokens: list[str] | None = None) -> list[str]:
    """The prompt's other readings (none for most prompts): symbols read as the letters they draw (the usual
    reading, then the other one where a symbol has two), and letters spelt between punctuation joined. With
    `known` (the word the lists know that a reading is, leetspeak read, or ""), each drawn piece is also read
    every other way (`readings`), and the known words they make are tried together. `tokens`: the prompt's
    lower-case words where the caller has them (letter names are looked for only where one is among them)."""
    named = prompt
    if tokens is None or not LETTER_NAMES.keys().isdisjoint(tokens):
        if sum(1 for _ in itertools.islice(_NAME_AUTOMATON.iter(f" {prompt.lower()} "), 3)) >= 3:
            named = _SPELT_NAMES.sub(_letters, prompt)
    if not candidate(prompt):
        return [named] if named != prompt else []
    found = _alternates(prompt)
    if named != prompt:
        found.append(named)
    if known is not None:
        found += [text for text in _known_readings(prompt, known) if text not in found]
    return found


def _letters(found: re.Match[str]) -> str:
    return "".join(LETTER_NAMES[name.lower()] for name in re.split(r"[\s.\-]+", found.group()))


def _known_readings(prompt: str, known: Callable[[str], str]) -> list[str]:
    spans: list[tuple[int, int, list[str]]] = []
    for found in _CHUNK.finditer(prompt):
        whole = found.group()
        chunk = whole.strip(_EDGE)
        start = found.start() + len(whole) - len(whole.lstrip(_EDGE))
        if len(chunk) >= 3 and _drawn(chunk):
            words = list(dict.fromkeys(w for r in readings(chunk) if r != chunk and (w := known(r))))[:3]
            if words:
                spans.append((start, start + len(chunk), words))
    texts: list[str] = []
    for choice in itertools.islice(itertools.product(*(words for _, _, words in spans)), 16):
        pieces, end = [], 0
        for (start, stop, _), read in zip(spans, choice, strict=True):
            pieces += [prompt[end:start], read]
            end = stop
        texts.append("".join(pieces) + prompt[end:])
    return texts if spans else []


def _alternates(prompt: str) -> list[str]:
    edits: list[list[tuple[int, int, str]]] = [[], [], []]
    pairs: list[tuple[int, int, str]] = []  # "vv" for "w", read only where other letters are drawn
    for found in _CHUNK.finditer(prompt):
        whole = found.group()
        chunk = whole.strip(_EDGE)
        start = found.start() + len(whole) - len(whole.lstrip(_EDGE))
        span = (start, start + len(chunk))
        if len(chunk) >= 3 and _drawn(chunk):
            for which in (0, 1):
                read = _read(chunk, which)
                if read != chunk:
                    edits[which].append((*span, read))
        elif "vv" in chunk.lower():
            pairs.append((*span, re.sub("vv", "w", chunk, flags=re.IGNORECASE)))
        if _SPELT.fullmatch(chunk) and sum(c.isalpha() for c in chunk) >= 2:
            edits[2].append((*span, "".join(c for c in chunk if c.isalnum())))
    for which in (0, 1):
        if edits[which] and pairs:
            edits[which] = sorted(edits[which] + pairs)
    result: list[str] = []
    for spans in edits:
        if spans:
            pieces, end = [], 0
            for start, stop, read in spans:
                pieces += [prompt[end:start], read]
                end = stop
            text = "".join(pieces) + prompt[end:]
            if text not in result:
                result.append(text)
    return result

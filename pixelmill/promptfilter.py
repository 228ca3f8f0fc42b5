"""The prompt filter: refuse prompts that ask for unsafe content before any GPU work is spent on them.

Lists are plain text files, one term or phrase per line, the category being the file's name
(`sexual.txt` → `sexual`). Terms match whole words only, so "Sussex", "cocktail dress" or "analog watch"
pass; phrases in an `allow.txt` list ("nude heels", "naked cake") are taken out before matching. Prompts
are normalised first, defeating the usual evasions: Unicode compatibility forms (NFKC), case, zero-width
and combining characters, look-alike letters from other scripts, leetspeak digits inside words, and
letters spread out with separators ("n.u.d.e", "n u d e", "nu-de").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent / "blocklists"
ALLOW = "allow"  # the list (allow.txt) of phrases that contain a blocked term but are fine

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e"
                                    "\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\ufeff"))
# Letters of other scripts that look like Latin ones (Cyrillic, Greek, IPA), after NFKC and case folding.
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "з": "3", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h", "ӏ": "l", "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n",
    "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "ς": "c", "τ": "t", "υ": "u", "χ": "x",
    "ω": "w", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ɪ": "i", "ʏ": "y", "ᴅ": "d", "ᴇ": "e", "ᴋ": "k", "ᴍ": "m",
    "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "ı": "i", "ł": "l", "ø": "o",
    "đ": "d", "ß": "ss",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "!": "i", "|": "l", "€": "e", "+": "t"})
_WORD = re.compile(r"[\w@$!|€+]+")  # a token, leet symbols included
_LEET_SYMBOL = re.compile(r"[@$!|€+](?=\w)")  # symbols stand for letters only before one ("$ex", not "nude!")
_SEPARATORS = r"[\s.\-_*'`~^:,;/\\·•]+"
_SPREAD = re.compile(rf"\b\w(?:{_SEPARATORS}\w\b){{2,}}")  # three or more single characters apart
_INWORD = re.compile(r"(?<=[a-z])[.\-_*'`~^·•](?=[a-z])")  # "nu-de", "nu.de"
_REPEATS = re.compile(r"([a-z])\1{2,}")  # "nuuude"


@dataclass(frozen=True)
class Match:
    category: str
    term: str

    def as_dict(self) -> dict[str, str]:
        return {"stage": "prompt", "category": self.category, "term": self.term}


def normalise(text: str) -> str:
    """Lower-case Latin letters, digits and single spaces, with the evasions above undone."""
    if text.isascii():  # the common case, 3x cheaper: NFKC/NFD, the invisible and look-alike maps change no ASCII
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
        text = text.translate(_HOMOGLYPHS)
    # Leetspeak only inside tokens that also hold letters: "s3x" is a word, "2024" or "15" are numbers.
    text = _WORD.sub(_unleet, text)
    return " ".join(text.split())


def _unleet(token: re.Match[str]) -> str:
    word = token.group()
    if word.isalpha() or not re.search(r"[a-z]", word):  # letters only: no digit or symbol to translate
        return word
    word = _LEET_SYMBOL.sub(lambda m: m.group().translate(_LEET), word)
    return re.sub(r"\d", lambda m: m.group().translate(_LEET), word)


def views(text: str) -> tuple[tuple[str, ...], list[str]]:
    """The normalised prompt as words, and with letters spread out inside a word joined ("nu-de", "nuuude"
    → "nude"); plus each run of three or more single characters joined ("a n.u.d.e" → "anude"), in which a
    term may sit anywhere."""
    base = normalise(text)
    runs = [_join_run(m) for m in _SPREAD.finditer(base)]
    words = re.sub(r"[^a-z0-9]+", " ", base).strip()
    joined = _SPREAD.sub(_join_run, base)
    joined = re.sub(r"[^a-z0-9]+", " ", _REPEATS.sub(r"\1", _INWORD.sub("", joined))).strip()
    return ((words,) if joined == words else (words, joined)), runs


def _join_run(run: re.Match[str]) -> str:
    letters = re.sub(r"[^a-z0-9]", "", run.group())
    return letters.translate(_LEET) if re.search(r"[a-z]", letters) else letters


class PromptFilter:
    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        """`terms`: (category, phrase); the category `allow` lists phrases that are not a match although
        they contain a blocked term ("nude heels", "naked cake")."""
        self.terms: dict[str, str] = {}  # normalised phrase -> category
        allowed: list[str] = []
        for category, term in terms:
            phrase = views(term)[0][0]
            if phrase and category == ALLOW:
                allowed.append(phrase)
            elif phrase:
                self.terms.setdefault(phrase, category)
        self._allowed = _alternation(allowed)
        if not self.terms:
            self._pattern = None
            return
        self._pattern = _alternation(self.terms)

    @classmethod
    def from_sources(cls, sources: Sequence[str]) -> PromptFilter:
        """`sources`: `builtin`, list files, or directories of `*.txt` lists."""
        return cls(term for source in sources for term in _read_source(source))

    def check(self, prompt: str) -> Match | None:
        """The first blocked term the prompt asks for, or None."""
        if self._pattern is None:
            return None
        texts, runs = views(prompt)
        for text in texts:
            if self._allowed is not None:
                text = self._allowed.sub("|", text)
            found = self._pattern.search(text)
            if found:
                return Match(category=self.terms[found.group(1)], term=found.group(1))
        for run in runs:
            for term, category in self.terms.items():
                if term.replace(" ", "") in run:
                    return Match(category=category, term=term)
        return None


def _alternation(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word match of any phrase, the longest first."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    if not ordered:
        return None
    return re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(p) for p in ordered) + r")(?![a-z0-9])")


def _read_source(source: str) -> Iterable[tuple[str, str]]:
    path = BUILTIN_DIR if source == BUILTIN else Path(source).expanduser()
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"PIXELMILL_PROMPT_BLOCKLISTS: no list at {source!r}")
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            term = line.split("#", 1)[0].strip()
            if term:
                yield file.stem, term


@functools.cache
def load(sources: tuple[str, ...]) -> PromptFilter:
    return PromptFilter.from_sources(sources)

"""The prompt filter's lists: reading list files (`builtin` is contract/blocklists/), a line's flags
(`parse_line` → `Term`) and the inflections a listed word stands for."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.promptfilter.languages import (
    E_DROP_SUFFIXES,
    FORM_STOP,
    LATIN_SUFFIXES,
    RUSSIAN_ENDINGS,
    SHORT_SUFFIXES,
)
from contract.promptfilter.normalise import CJK, CYRILLIC, REPEATS, fold

BUILTIN = "builtin"


BUILTIN_DIR = Path(__file__).resolve().parent.parent / "blocklists"


ALLOW = "allow"  # the list (allow.txt) of phrases that contain a blocked term but are fine


MINORS = "minors"


SEXUAL = "sexual"


MINOR_GROUP = "minor"  # weak terms of minors.txt in this group make any sexual term a `minors` match


TEASE_GROUP = "tease"  # weak sexual terms that count only towards `minors` ("lingerie", "seductive")


PERSON_GROUP = "person"  # weak sexual terms that are people: they need a sexual term of another group


@dataclass
class Term:
    category: str
    term: str  # as written in the list (reported in matches)
    group: str = ""  # weak terms: their group; "" = strong
    inside: bool = False  # `*`: may sit inside a longer word
    exact: bool = False  # `=`: no inflections or typos
    colour: bool = False  # `%`: not next to a product or colour noun

    @property
    def weak(self) -> bool:
        return bool(self.group)


def parse_line(category: str, line: str) -> Term | None:
    """One list line: flags, then the term (see the package docstring, contract/promptfilter/__init__.py)."""
    text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("\\#") else line.strip()[1:]
    if not text:
        return None
    term = Term(category, "")
    while text and text[0] in "*=%~":
        flag, text = text[0], text[1:]
        if flag == "~":
            group, _, text = text.partition(" ")
            term.group = group or "weak"
        else:
            term.inside |= flag == "*"
            term.exact |= flag == "="
            term.colour |= flag == "%"
        text = text.strip()
    term.term = text
    term.exact |= term.weak  # weak words are listed with their forms: "cut" must not become "cute"
    if CJK.search(text):
        term.inside = True
    return term if text else None


@functools.cache
def russian_endings() -> tuple[str, ...]:
    """Russian adjective and noun endings, folded as prompts are (some Cyrillic letters become Latin)."""
    return tuple(sorted({fold(e) for e in RUSSIAN_ENDINGS}, key=len, reverse=True))


def inflections(word: str, exact: bool) -> set[str]:
    """A word and its inflections: plural, -ed, -ing, -er, Romance and German endings; Russian case endings."""
    if not exact and len(word) >= 5 and CYRILLIC.search(word) and word.isalpha():
        endings = russian_endings()
        stem = next((word[: -len(e)] for e in endings if e and word.endswith(e) and len(word) - len(e) >= 4), word)
        return {stem + e for e in endings} | {word}
    if exact or word in FORM_STOP or not word.isalpha() or not word.isascii():
        return {word}
    forms = {word + suffix for suffix in (LATIN_SUFFIXES if len(word) >= 4 else SHORT_SUFFIXES)}
    if word.endswith("e") and len(word) >= 4:
        forms.update(word[:-1] + suffix for suffix in E_DROP_SUFFIXES)
    if word.endswith("y") and len(word) >= 4:
        forms.update(word[:-1] + suffix for suffix in ("ies", "ied", "ier", "iest"))
    if word[-1] not in "aeiouyw" and len(word) >= 3:
        forms.update(word + word[-1] + suffix for suffix in ("ing", "ed", "er", "ers", "y", "ies"))
    return (forms - FORM_STOP) | {word}


_SOUNDS = (("ph", "f"), ("ck", "k"), ("c", "k"), ("q", "k"), ("x", "ks"), ("z", "s"))


def sound_key(word: str) -> str:
    """A spelling-by-sound key: repeated letters collapsed, ph/ck/c/q/x/z written one way, vowels after the first
    letter dropped ("nekkid" and "naked" → "nkd", "sooicide" and "suicide" → "skd")."""
    word = REPEATS.sub(r"\1", word)
    for old, new in _SOUNDS:
        word = word.replace(old, new)
    word = REPEATS.sub(r"\1", word).replace("gs", "ks").replace("gz", "ks")  # "seggs" sounds like "sex"
    return word[:1] + "".join(c for c in word[1:] if c not in "aeiouy")


_SHAPE_CONSONANTS = (("ph", "f"), ("ck", "k"), ("wh", "w"), ("q", "k"), ("x", "ks"), ("z", "s"), ("gs", "ks"))


_SOFT_C = re.compile(r"c(?=[eiy])")


# A vowel group (vowels, a "y" or "w" closing them, an "h" before a consonant: "ey", "ew", "ahz") as the vowel
# it sounds like: its first letter, but for spellings of one sound ("oo", "ew" as "u"; "ee", "ea", "ey", a final
# "y" as "i"; "ai", "ay" as "a"; "oa", "au", "aw", "ow" as "o").
_SHAPE_VOWEL = re.compile(r"(?<=.)y(?![aeiou])|[aeiou]+(?:[yw](?![aeiou])|h(?=[^aeiouy]))?")


_VOWEL_SOUNDS = {"oo": "u", "ou": "u", "ew": "u", "ue": "u", "ee": "i", "ea": "i", "ie": "i", "ey": "i", "y": "i"}
_VOWEL_SOUNDS |= {"ai": "a", "ay": "a", "oa": "o", "au": "o", "aw": "o", "ow": "o"}


_DOUBLE_CONSONANT = re.compile(r"([^aeiouy])\1+")


def _vowel_sound(found: re.Match[str]) -> str:
    group = found.group()
    return _VOWEL_SOUNDS.get(group[:2], group[0])


def sound_shape(word: str) -> str:
    """A spelling-by-sound key that keeps its vowels, for words too short for `sound_key`: consonants written one
    way (ph/ck/q/x/z/soft c), a silent final "e" dropped, each vowel group written as the vowel it sounds
    like ("nood", "newd" and "nude" → "nud", "kumm" and "cum" → "kum"; "saks" is not "sex")."""
    word = _DOUBLE_CONSONANT.sub(r"\1", word)
    if len(word) > 3 and word[-1] == "e" and word[-2] not in "aeiouy":
        word = word[:-1]
    elif len(word) > 4 and word.endswith("es") and word[-3] not in "aeiouysxz":
        word = word[:-2] + "s"
    word = _SOFT_C.sub("s", word)
    for old, new in _SHAPE_CONSONANTS:
        word = word.replace(old, new)
    return _DOUBLE_CONSONANT.sub(r"\1", _SHAPE_VOWEL.sub(_vowel_sound, word.replace("c", "k")))


NICKNAME_ENDINGS = ("ies", "eys", "ie", "ey", "y")  # "nudie", "boobies": pet forms of a word


def nickname_stems(shape: str) -> set[str]:
    """The shapes (`sound_shape`) a pet form of a word may be built on: the word's, and the word's less its last
    consonant or its last vowel and consonant, keeping two consonants ("naked" → "nak" for "nakey"; "massacre"
    gives none: "mazie" is no pet form of it)."""
    stems = {shape}
    for cut in (re.sub("[^aeiou]$", "", shape), re.sub("[aeiou][^aeiou]$", "", shape)):
        if len(cut) >= 3 and len(cut) < len(shape) and sum(c not in "aeiou" for c in cut) >= 2:
            stems.add(cut)
    return stems


_VOWEL_GROUP = re.compile("[aeiouy]+")


def syllables(word: str) -> int:
    """Vowel groups, a final silent "e" not counted ("nudes" 1, "noodz" 1, "naked" 2): words of one sound key
    must have as many ("seikoset" is not "sextoy")."""
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "s"  # "boobies" as "boobs"
    elif word.endswith("es") and len(word) > 3:
        word = word[:-2] + "s"
    elif word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return len(_VOWEL_GROUP.findall(word))


@functools.cache
def dictionary_guard() -> frozenset[str]:
    """Real English words (and their inflections) that a typo or a sound key would read as a listed word: fuzzy
    matching never turns these into a blocked one (`dictionary_guard.txt`, made by
    tests/data/make_dictionary_guard.py from the public-domain Webster's 2nd word list)."""
    text = (Path(__file__).resolve().parent / "dictionary_guard.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.split() if not line.startswith("#"))


def deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def read_source(source: str) -> Iterable[tuple[str, str]]:
    path = BUILTIN_DIR if source == BUILTIN else Path(source).expanduser()
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"PIXELMILL_PROMPT_BLOCKLISTS: no list at {source!r}")
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.split("#", 1)[0].strip():
                yield file.stem, line

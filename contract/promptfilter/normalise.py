"""Folding and reading prompts: look-alike letters, invisibles, accents and leetspeak undone.

`fold` maps a text to lower case with NFKC, every invisible, format, control, variation-selector and tag
character removed, look-alike letters of other scripts mapped to Latin with Unicode's confusables data (UTS #39)
and small capitals read. `words_of` then reads its words with leetspeak undone and possessives dropped.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from contract.promptfilter.languages import GREEK_AND_OTHER_FIXES

_EXTRA_INVISIBLE = [
    (0xFE00, 0xFE0F),  # variation selectors
    (0xE0100, 0xE01EF),  # variation selectors supplement
    (0xE0000, 0xE007F),  # tag characters
    (0x2800, 0x2800),  # braille pattern blank
    (0x3164, 0x3164),  # hangul filler
    (0x115F, 0x1160),  # hangul choseong/jungseong fillers
    (0xFFA0, 0xFFA0),  # halfwidth hangul filler
    (0x180B, 0x180F),  # mongolian free variation selectors, vowel separator
    (0x200B, 0x200F),  # zero width space/joiners, direction marks
    (0x202A, 0x202E),  # direction embeddings/overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, direction isolates
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # arabic letter mark
    (0x17B4, 0x17B5),  # khmer inherent vowels
    (0xFEFF, 0xFEFF),  # byte order mark
    (0x1D173, 0x1D17A),  # musical symbol format characters
]


_DROP_CATEGORIES = {"Cf", "Cc", "Mn", "Me", "Co", "Cs"}


_CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"


CJK = re.compile(f"[{_CJK_CLASS}]")


CYRILLIC = re.compile("[\u0400-\u04ff]")


CJK_SPREAD = re.compile(f"(?<=[{_CJK_CLASS}])[\\s\\W_]{{1,3}}(?=[{_CJK_CLASS}])")


def _script_protected(char: str) -> bool:
    """Kana, CJK ideographs and Hangul keep their identity: some look like Latin letters but are words."""
    return bool(CJK.match(char)) or 0x3000 <= ord(char) <= 0x303F


@functools.cache
def _confusables() -> dict[int, str]:
    """Look-alike letters of other scripts → their Latin letter or digit, from Unicode's confusables data (UTS #39,
    the data file of `confusable_homoglyphs`): letters win over digits, the first target listed wins."""
    import confusable_homoglyphs  # only for its data file (Unicode confusables.txt as JSON)

    data_file = Path(confusable_homoglyphs.__file__).resolve().parent / "confusables.json"
    data: dict[str, list[dict[str, str]]] = json.loads(data_file.read_text(encoding="utf-8"))
    found: dict[int, str] = {}
    for target, entries in sorted(data.items(), key=lambda kv: (not kv[0].isalpha(), kv[0])):  # letters win
        if not (len(target) == 1 and target.isascii() and target.isalnum()):
            continue
        for entry in entries:
            char = entry["c"]
            if len(char) == 1 and not char.isascii() and not _script_protected(char):
                found.setdefault(ord(char), target.lower())
    return found


_INVISIBLE_CODES = frozenset(code for low, high in _EXTRA_INVISIBLE for code in range(low, high + 1))


_WHITESPACE_CONTROLS = "\t\n\r\x0b\x0c"


def _base_fold(code: int) -> str | None:
    """What one character folds to before the fixes of `_fold_char`: nothing (invisible, format, control, mark,
    private use), its Latin look-alike, the letter of a small capital, or itself."""
    char = chr(code)
    if code in _INVISIBLE_CODES:
        return None
    if not 0xD800 <= code <= 0xDFFF and unicodedata.category(char) in _DROP_CATEGORIES:
        if char not in _WHITESPACE_CONTROLS:
            return None
    latin = _confusables().get(code)
    if latin is not None:
        return latin
    if 0x80 <= code < 0x20000:
        name = unicodedata.name(char, "")
        if " SMALL CAPITAL " in name and len(name.rsplit(" ", 1)[1]) == 1:
            return name.rsplit(" ", 1)[1].lower()
    return char


def _fold_char(code: int) -> str | None:
    """One character as `fold` maps it (see `_FoldTable`)."""
    char = chr(code)
    if char in _WHITESPACE_CONTROLS:
        return " "
    if 0x400 <= code < 0x530:  # Cyrillic capitals fold like their lower case ("В" → "в", not "b")
        lower = char.lower()
        if lower != char and len(lower) == 1:
            return GREEK_AND_OTHER_FIXES.get(lower, _base_fold(ord(lower)))
    if char in GREEK_AND_OTHER_FIXES:
        return GREEK_AND_OTHER_FIXES[char]
    return _base_fold(code)


class _FoldTable(dict[int, "str | None"]):
    """The translation table of `fold`, filled in as characters are met: invisibles → nothing, look-alikes and
    small capitals → Latin. Building it whole (every code point's category and name) took about a second in
    every process that loads the filter; a prompt meets a few dozen distinct characters."""

    def __missing__(self, code: int) -> str | None:
        folded = self[code] = _fold_char(code)
        return folded


@functools.cache
def _fold_table() -> _FoldTable:
    return _FoldTable()


_DRAWN_LETTER = re.compile(r"(?:LATIN (?:CAPITAL|SMALL) LETTER|REGIONAL INDICATOR SYMBOL LETTER) ([A-Z])")


class _LetterTable(dict[int, str]):
    """Letters in boxes, circles and brackets → the plain letter, by Unicode name, before NFKC: every enclosed,
    squared, negative, parenthesised and regional-indicator letter ("🅽", "🇳", "⒩"), whatever block it is in.
    NFKC leaves the negative and regional ones alone and turns parenthesised ones into "(n)"."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        letter = char
        if code >= 0x2000 and not 0xD800 <= code <= 0xDFFF:
            name = unicodedata.name(char, "")
            found = _DRAWN_LETTER.search(name)
            if found and (name.startswith(("CIRCLED", "NEGATIVE", "SQUARED", "PARENTHESIZED", "REGIONAL"))):
                letter = found.group(1).lower()
        self[code] = letter
        return letter


@functools.cache
def _letter_table() -> _LetterTable:
    return _LetterTable()


_FOLDED: dict[str, str] = {}  # piece between spaces → its fold (`fold`)

_FOLDED_LIMIT = 200_000
_FOLDED_PIECE = 64  # longer pieces are folded, never kept: the cache stays a few tens of MB whatever is submitted


def fold(text: str) -> str:
    """Lower case with look-alikes, invisibles and accents undone; digits and punctuation kept.

    Text that is not ASCII is folded piece by piece between its ASCII spaces, each piece's fold remembered:
    catalogue titles repeat their words ("Damen", "azul marino"), and the five passes of `_fold_piece` cost
    ~10 µs a title. A space is a starter that composes with nothing and case mapping is per character here
    (`casefold` before `lower`: no final-sigma context), so the pieces fold as the whole does
    (`test_fold_by_pieces_is_fold_of_the_whole`)."""
    if text.isascii():
        text = text.lower()
        return text if text.isprintable() else text.translate(_fold_table())  # controls out, tabs → spaces
    pieces = text.split(" ")
    folded = list(map(_FOLDED.get, pieces))
    if None in folded:
        if len(_FOLDED) > _FOLDED_LIMIT:
            _FOLDED.clear()
        for index, piece in enumerate(pieces):
            if folded[index] is None:
                folded[index] = done = _fold_piece(piece)
                if len(piece) <= _FOLDED_PIECE:
                    _FOLDED[piece] = done
    return " ".join(folded)  # type: ignore[arg-type]


def _fold_piece(text: str) -> str:
    """`fold` of a text that is not ASCII (or of one piece of it), with no cache."""
    if text.isascii():
        text = text.lower()
        return text if text.isprintable() else text.translate(_fold_table())
    table = _fold_table()
    text = unicodedata.normalize("NFKC", text.translate(_letter_table())).translate(table)
    text = unicodedata.normalize("NFD", text.casefold().lower().translate(table)).translate(table)  # Cherokee
    return unicodedata.normalize("NFC", text)


_LEET_MAP = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "€": "e",
    "+": "t",
    "¡": "i",
    "£": "l",
    "¢": "c",
}


_LEET = str.maketrans(_LEET_MAP)


def leet_read(text: str) -> str:
    """A text with every leetspeak character read as its letter, whatever surrounds it."""
    return text.translate(_LEET)


_TOKEN = re.compile(r"(?:[^\W_]|[$@!|€+¡£¢])+")


POSSESSIVE = re.compile(r"(?<=\w)['’`´]s?\b")


LETTER = re.compile(r"[^\W\d_]")


_MEASURE = re.compile(r"\d+[a-z]{0,3}")  # "14yo", "32w", "4k", "3xl", "1080p": a number, not leetspeak


# A model code: a few letters then three or more digits, or digits then a short suffix ("b4135", "1698pro",
# "8080s"). Its digits are a number, not leetspeak ("b4135" is not "baise"); its letters are still looked up as a
# word ("fag907": `code_letters`). Letters on both sides of a digit run stay leetspeak ("n1663r"); two pieces
# joined across a separator are read as codes when either piece is one (`joined_read`: "t-1771x").
CODE = re.compile(r"[a-z]{1,4}\d{3,}|\d{3,}[a-z]{1,3}")


def joined_read(first: str, second: str) -> str:
    """Two pieces joined across an in-word separator, read: as they are where either is a model code."""
    joined = first + second
    if joined.isalpha():
        return joined
    return joined if CODE.fullmatch(first) or CODE.fullmatch(second) else read_word(joined)


def code_letters(raw: str) -> str:
    """The letters a model code starts with ("fag907" → "fag"), or "" for anything that is no model code."""
    if not CODE.fullmatch(raw):
        return ""
    end = 0
    while end < len(raw) and raw[end].isalpha():
        end += 1
    return raw[:end]


INWORD_SEPARATOR = re.compile(r"[-=._*~^·•'’`:/\\]+")


REPEATS = re.compile(r"(.)\1+")


_FIRST_GROUP = operator.itemgetter(1)


def collapse(word: str) -> str:
    """Repeated letters collapsed ("nuuude" → "nude")."""
    return REPEATS.sub(_FIRST_GROUP, word)


_LEET_ALT = str.maketrans({**_LEET_MAP, "1": "l", "!": "l", "|": "i"})  # the other reading of 1, ! and |


def words_of(text: str) -> Iterator[tuple[str, str, str]]:
    """(word as read, word as written, separator before it) for each word of a folded text."""
    if "'" in text or "’" in text or "`" in text or "´" in text:
        text = POSSESSIVE.sub("", text)
    end = 0
    for found in _TOKEN.finditer(text):
        raw = found.group().rstrip("!|+¡")
        before = text[end : found.start()]
        end = found.end()
        if raw:
            yield read_word(raw), raw, before


@functools.lru_cache(maxsize=65536)
def read_word(raw: str) -> str:
    """A word with leetspeak undone where it holds letters; numbers and measures ("14yo", "4k") stay."""
    if raw.isdigit() or not LETTER.search(raw) or _MEASURE.fullmatch(raw) or CODE.fullmatch(raw):
        return raw
    return raw.translate(_LEET)


def normalise(text: str) -> str:
    """Lower-case letters, digits and single spaces, with the evasions above undone."""
    folded = fold(text)
    if not _TOKEN.search(folded):
        return " ".join(folded.split())
    pieces: list[str] = []
    end = 0
    for found in _TOKEN.finditer(folded):
        pieces.append(folded[end : found.start()])
        raw = found.group()
        core = raw.rstrip("!|+¡")
        pieces.append(raw.replace(core, read_word(core)) if core else raw)
        end = found.end()
    pieces.append(folded[end:])
    return " ".join("".join(pieces).split())


_AMBIGUOUS = {"1": "il", "!": "il", "|": "li"}


def leet_variants(raw: str) -> set[str]:
    """Readings of a leetspeak word: "1", "!" and "|" may each be "i" or "l" ("|o1i" → "loli"); a model code is
    read only as it is (`CODE`)."""
    if CODE.fullmatch(raw):
        return {raw}
    base = raw.translate(_LEET)
    spots = [i for i, c in enumerate(raw) if c in _AMBIGUOUS][:4]
    variants = {base, raw.translate(_LEET_ALT)}
    for mask in range(1 << len(spots)):
        letters = list(base)
        for bit, spot in enumerate(spots):
            letters[spot] = _AMBIGUOUS[raw[spot]][(mask >> bit) & 1]
        variants.add("".join(letters))
    return variants

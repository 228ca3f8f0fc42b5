"""The prompt filter: refuse prompts that ask for unsafe content before any GPU work is spent on them.

Lists are plain text files, one term or phrase per line, the category being the file's name (`sexual.txt` →
`sexual`); `allow.txt` holds phrases that are fine although they contain a listed term ("naked cake", "ball cock")
and, marked `&`, product and colour nouns that give "nude" its colour sense ("nude heels"). A line may start with
flags (docs/promptfilter.md):

    term        blocks on its own: whole word, its inflections (plural, -ed, -ing, -er, -a/-o/-en …), doubled
                letters collapsed, and one typo for words of 6+ letters
    *term       also inside a longer word ("nudewoman", "pornstar"); CJK terms always are
    =term       exactly this word: no inflections, no typo tolerance ("cp")
    %term       not when a product or colour noun sits within two words ("nude heels", "escarpins nude")
    ~group term weak: blocks only with a weak term of another group of the same category ("woman" + "tits",
                "knife" + "blood"); a `~minor` term of minors.txt turns any sexual term into `minors`

Prompts are folded before matching (`fold`): NFKC, every invisible, format, control, variation-selector and tag
character removed, look-alike letters of other scripts mapped to Latin with Unicode's confusables data (UTS #39),
small capitals, case folding, accents. Words are then read with leetspeak undone ("nud3", "$ex", "a$$", "pr0n"),
possessives dropped, and letters spread over separators rejoined ("n u d e", "nu-de", "nu de", "se xy").
Long words are also read as words run together: listed words of 5+ letters inside them, and short listed words
(`nu`, `nua`, `nazi`) where a dynamic-programming split over function words, common prompt words and listed words
puts them between known pieces ("meninanuanapraia" = menina|nua|na|praia). Numeric codes (`1488`, `88`, `14`) are
weak terms of hate.txt: model numbers, sizes and prices pass, a code with a hate-context word ("heil") blocks.
Plain-ASCII prompts made of words already seen take a fast path: a `str.lower`, one regex split, dict look-ups,
and set look-ups over the joins of neighbouring words; `test_fast_path_agrees_with_the_full_reading` holds it to
the full reading. The fold table is filled per character as characters are met (see `_FoldTable`).
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ahocorasick

BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent / "blocklists"
ALLOW = "allow"  # the list (allow.txt) of phrases that contain a blocked term but are fine
MINORS = "minors"
SEXUAL = "sexual"
MINOR_GROUP = "minor"  # weak terms of minors.txt in this group make any sexual term a `minors` match
TEASE_GROUP = "tease"  # weak sexual terms that count only towards `minors` ("lingerie", "seductive")
PERSON_GROUP = "person"  # weak sexual terms that are people: they need a sexual term of another group

_CACHE_LIMIT = 200_000  # words remembered between prompts (catalogue vocabularies repeat)


@dataclass(frozen=True)
class Match:
    category: str
    term: str

    def as_dict(self) -> dict[str, str]:
        return {"stage": "prompt", "category": self.category, "term": self.term}


# --- folding ---------------------------------------------------------------------------------------------------

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
_GREEK_AND_OTHER_FIXES = {  # confusables.txt maps these to a less useful letter, or not at all
    "Ι": "i",
    "ι": "i",
    "ɩ": "i",
    "ı": "i",
    "ӏ": "l",
    "Ӏ": "i",
    "ł": "l",
    "ø": "o",
    "đ": "d",
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "ð": "d",
    "þ": "p",
    "η": "n",
    "ν": "v",
    "μ": "u",
    "κ": "k",
    "τ": "t",
    "ρ": "p",
    "χ": "x",
    "ω": "w",
    "γ": "y",
    "β": "b",
    "α": "a",
    "ε": "e",
    "σ": "o",
    "ς": "c",
    "υ": "u",
    "ο": "o",
    "ϲ": "c",
    "ʀ": "r",
    "ɢ": "g",
    "ʜ": "h",
    "ʟ": "l",
    "ɴ": "n",
    "ɪ": "i",
    "ʏ": "y",
    "ʙ": "b",
    "ǫ": "q",
    "ꞯ": "q",
    "ꜰ": "f",
    "ꜱ": "s",
    "ɑ": "a",
    "ɡ": "g",
    "ɒ": "a",
    "ɔ": "c",
    "ə": "e",
    "ɛ": "e",
    "ʃ": "s",
    "ʋ": "u",
    "ｉ": "i",
    "օ": "o",
    "ս": "u",
    "ո": "n",
    "հ": "h",
    "ց": "g",
    "զ": "q",
    "ա": "w",
    "ե": "t",
    "յ": "j",
    "є": "e",
    "ь": "b",
    "Ь": "b",
    "к": "k",
    "м": "m",
    "т": "t",
    "ք": "p",
    "Օ": "o",
    "Ս": "u",
    "Տ": "s",
    "Լ": "l",
    "Զ": "z",
    "Ճ": "d",
    "Ո": "n",
    "Ռ": "n",
}
_CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CLASS}]")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_CJK_SPREAD = re.compile(f"(?<=[{_CJK_CLASS}])[\\s\\W_]{{1,3}}(?=[{_CJK_CLASS}])")


def _script_protected(char: str) -> bool:
    """Kana, CJK ideographs and Hangul keep their identity: some look like Latin letters but are words."""
    return bool(_CJK.match(char)) or 0x3000 <= ord(char) <= 0x303F


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
            return _GREEK_AND_OTHER_FIXES.get(lower, _base_fold(ord(lower)))
    if char in _GREEK_AND_OTHER_FIXES:
        return _GREEK_AND_OTHER_FIXES[char]
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


def fold(text: str) -> str:
    """Lower case with look-alikes, invisibles and accents undone; digits and punctuation kept."""
    if text.isascii():
        text = text.lower()
        return text if text.isprintable() else text.translate(_fold_table())  # controls out, tabs → spaces
    table = _fold_table()
    text = unicodedata.normalize("NFKC", text).translate(table)
    text = unicodedata.normalize("NFD", text.casefold().lower().translate(table)).translate(table)  # Cherokee
    return unicodedata.normalize("NFC", text)


# --- words -----------------------------------------------------------------------------------------------------

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
_TOKEN = re.compile(r"(?:[^\W_]|[$@!|€+¡£¢])+")
_POSSESSIVE = re.compile(r"(?<=\w)['’`´]s?\b")
_LETTER = re.compile(r"[^\W\d_]")
_MEASURE = re.compile(r"\d+[a-z]{0,3}")  # "14yo", "32w", "4k", "3xl", "1080p": a number, not leetspeak
_INWORD_SEPARATOR = re.compile(r"[-=._*~^·•'’`:/\\]+")
_REPEATS = re.compile(r"(.)\1+")
_FIRST_GROUP = operator.itemgetter(1)


def _collapse(word: str) -> str:
    """Repeated letters collapsed ("nuuude" → "nude")."""
    return _REPEATS.sub(_FIRST_GROUP, word)


_LEET_ALT = str.maketrans({**_LEET_MAP, "1": "l", "!": "l", "|": "i"})  # the other reading of 1, ! and |
_OF = {"de", "da", "do", "di", "del", "des", "du", "fur"}
_FOR = {"for", "para", "pour", "fur", "fuer", "per"}
_ATTRIBUTE_COLOUR = re.compile(r"(?:^|[,(/|;:\-–\[]\s*|\b(?:in|en|em)\s+)nudes?\s*(?=$|[,)/|;:\-–\]])")
_COLOUR_WORDS = {"nude", "nudes"}  # set off as an attribute ("…, nude, 38") they name a colour
_ATTRIBUTE_BEFORE = {"in", "en", "em", "color", "colour", "cor", "couleur", "farbe", "colore", "tono", "shade"}
_ATTRIBUTE_AFTER = {"in", "en", "em", "with", "and", "und", "y", "et", "e", "color", "colour", "farben"}
_OWNER = re.compile(r"([^\W\d_]+)['’`´]")
_NOT_POSSESSIVE = re.compile(r"[^\W\d_]+(?!['’`´\w])")


def words_of(text: str) -> Iterator[tuple[str, str, str]]:
    """(word as read, word as written, separator before it) for each word of a folded text."""
    if "'" in text or "’" in text or "`" in text or "´" in text:
        text = _POSSESSIVE.sub("", text)
    end = 0
    for found in _TOKEN.finditer(text):
        raw = found.group().rstrip("!|+¡")
        before = text[end : found.start()]
        end = found.end()
        if raw:
            yield _read(raw), raw, before


@functools.lru_cache(maxsize=65536)
def _read(raw: str) -> str:
    """A word with leetspeak undone where it holds letters; numbers and measures ("14yo", "4k") stay."""
    if raw.isdigit() or not _LETTER.search(raw) or _MEASURE.fullmatch(raw):
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
        pieces.append(raw.replace(core, _read(core)) if core else raw)
        end = found.end()
    pieces.append(folded[end:])
    return " ".join("".join(pieces).split())


# --- lists -----------------------------------------------------------------------------------------------------

_LATIN_SUFFIXES = (
    "s",
    "es",
    "ed",
    "d",
    "ing",
    "er",
    "ers",
    "y",
    "ies",
    "a",
    "o",
    "os",
    "as",
    "e",
    "en",
    "n",
    "ne",
    "nes",
    "x",
    "ly",
    "ness",
    "ie",
    "ies",
    "ity",
    "ism",
    "ist",
    "ists",
    "ic",
    "ische",
    "isch",
    "ique",
)
_SHORT_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ers", "y", "ie", "ies", "a", "o", "os", "as", "e")
_E_DROP_SUFFIXES = ("ing", "ed", "er", "ers", "a", "as", "o", "os", "ity", "ist", "ists", "ism", "ic", "ation")
_COLLAPSE_STOP = {"as", "bobs", "tis", "cok", "ded", "pus", "dik", "cum", "tits", "bals", "sex", "nud"}
_FORM_STOP = {
    "nudo",
    "nudos",
    "cocker",
    "cockers",
    "cocky",
    "dicky",
    "dickie",
    "dickies",
    "tito",
    "tita",
    "titer",
    "titers",
    "nudy",
    "nuder",
    "sexe",
    "sexa",
    "analy",
    "porne",
}  # inflections that are other words
_FUZZY_STOP = {
    "fitting",
    "fittings",
    "fasting",
    "stabled",
    "stabling",
    "mailed",
    "frayed",
    "lunched",
    "setting",
    "settings",
    "wachsen",
    "nodes",
    "fished",
    "listing",
    "posting",
    "rested",
    "tested",
    "nested",
    "texting",
    "testing",
    "sexting",
    "rapids",
    "ravine",
    "bonded",
    "banded",
    "exotic",
    "exotics",
    "nudist",
    "heroic",
    "ironic",
    "erotik",
    "beheld",
    "mangle",
    "mangled",
    "bloody",
    "trunks",
    "breast",
    "breasts",
    "nipper",
    "nippers",
    "shooting",
    "sexton",
    "suicid",
    "killer",
    "killers",
    "hunger",
    "nigeria",
    "niger",
    "tranche",
    "spice",
    "spices",
    "faggots",
    "bondage",
    "bondages",
    "poker",
    "pussycat",
    "rapeseed",
    "grape",
    "drape",
    "draped",
    "raped",
    "tapes",
    "naked",
    "neked",
    "porno",
    "murder",
    "murders",
    "cutter",
    "cutters",
    "gorey",
    "penis",
    "peanis",
    "pains",
    "pants",
    "panties",
    "skinny",
    "whore",
    "where",
    "heroin",
    "heroine",
    "nudes",
    "stripe",
    "striped",
    "stripes",
    "striper",
    "strippers",
    "stripper",
    "dressing",
    "undresses",
    "sensual",
    "casual",
    "sexual",
    "unisex",
    "bisected",
    "dissected",
    "titles",
    "titled",
}


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


@dataclass
class _Hit:
    term: Term
    start: int  # word index
    end: int  # word index after the last word


def parse_line(category: str, line: str) -> Term | None:
    """One list line: flags, then the term (see the module docstring)."""
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
    if _CJK.search(text):
        term.inside = True
    return term if text else None


@functools.cache
def _russian_endings() -> tuple[str, ...]:
    """Russian adjective and noun endings, folded as prompts are (some Cyrillic letters become Latin)."""
    endings = (
        "ыми",
        "ими",
        "ого",
        "его",
        "ому",
        "ему",
        "ая",
        "яя",
        "ое",
        "ее",
        "ые",
        "ие",
        "ый",
        "ий",
        "ой",
        "ей",
        "ую",
        "юю",
        "ым",
        "им",
        "ых",
        "их",
        "ами",
        "ями",
        "ом",
        "ем",
        "ам",
        "ям",
        "ах",
        "ях",
        "а",
        "я",
        "ы",
        "и",
        "у",
        "ю",
        "е",
        "о",
        "",
    )
    return tuple(sorted({fold(e) for e in endings}, key=len, reverse=True))


def _forms(word: str, exact: bool) -> set[str]:
    """A word and its inflections: plural, -ed, -ing, -er, Romance and German endings; Russian case endings."""
    if not exact and len(word) >= 5 and _CYRILLIC.search(word) and word.isalpha():
        endings = _russian_endings()
        stem = next((word[: -len(e)] for e in endings if e and word.endswith(e) and len(word) - len(e) >= 4), word)
        return {stem + e for e in endings} | {word}
    if exact or word in _FORM_STOP or not word.isalpha() or not word.isascii():
        return {word}
    forms = {word + suffix for suffix in (_LATIN_SUFFIXES if len(word) >= 4 else _SHORT_SUFFIXES)}
    if word.endswith("e") and len(word) >= 4:
        forms.update(word[:-1] + suffix for suffix in _E_DROP_SUFFIXES)
    if word.endswith("y") and len(word) >= 4:
        forms.update(word[:-1] + suffix for suffix in ("ies", "ied", "ier", "iest"))
    if word[-1] not in "aeiouyw" and len(word) >= 3:
        forms.update(word + word[-1] + suffix for suffix in ("ing", "ed", "er", "ers", "y", "ies"))
    return (forms - _FORM_STOP) | {word}


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class PromptFilter:
    """Matches prompts against category lists; build it once (`load` caches) and call `check` per prompt."""

    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        """`terms`: (category, list line); the category `allow` lists phrases that are not a match although they
        contain a blocked term, and product/colour nouns (`&noun`) that give `%` terms their harmless sense."""
        self.terms: list[Term] = []
        self._word: dict[str, list[Term]] = {}  # a word form → the single-word terms it is
        self._collapsed: dict[str, list[Term]] = {}  # the same with repeated letters collapsed
        self._fuzzy: dict[str, list[tuple[str, Term]]] = {}  # deletion neighbourhood of long words
        self._phrase_fuzzy: dict[str, list[str]] = {}  # the same for the words of phrases
        self._phrase_words: set[str] = set()
        self._inside = ahocorasick.Automaton()  # terms that may sit inside a word; allowed spans (no terms)
        self._minor_inside = ahocorasick.Automaton()  # minor words inside joined words ("niñadesnuda")
        self._phrases = ahocorasick.Automaton()  # multi-word terms and allowed phrases over " word word "
        self._nouns: set[str] = set()
        self._people: set[str] = set()  # forms of weak `person` and `minor` words
        self._colour_forms: set[str] = set()  # forms of `%` terms
        self._first_words: set[str] = set()  # the first word of each phrase (a quick "could a phrase start here")
        self._cache: dict[str, tuple[Term, ...]] = {}
        self._piece_cache: dict[str, tuple[Term, ...]] = {}
        self._exact_cache: dict[str, tuple[Term, ...]] = {}
        self._run_cache: dict[tuple[str, ...], bool] = {}  # runs of short pieces with their neighbours
        self._plans: dict[frozenset[tuple[str, str]], tuple[list[str], bool | None]] = {}  # see `_plan`
        self._pair_cache: dict[tuple[str | Any, ...], bool] = {}  # pieces joined by a separator (`_no_joins`)
        self._readings: dict[str, frozenset[str]] = {}  # a word's readings for phrases (typos fixed, leetspeak)
        self._canon_cache: dict[str, str] = {}
        self._compound = ahocorasick.Automaton()  # every listed word form, for words run together
        self._compound_cache: dict[str, tuple[Term, ...]] = {}
        # one word of each listed phrase → the phrase's other words (and its last word, which may be inflected)
        self._gates: dict[str, set[tuple[tuple[str, ...], str]]] = {}
        self._state: dict[str, frozenset[tuple[str, str]] | bool] = {}  # see `_token_state`
        self._prefixes: set[str] = set()  # every start of a listed word form: joins stop when they leave it
        phrases: dict[str, list[Term | None]] = {}
        inside: dict[str, list[Term]] = {}
        inside_allowed: list[str] = []
        minor_inside: dict[str, Term] = {}
        base_phrase_words: set[str] = set()  # words of blocked phrases as listed: typos are fixed towards these
        gate_phrases: list[tuple[list[str], Term]] = []
        for category, line in terms:
            if category == ALLOW and line.strip().startswith("&"):
                noun = self._key(line.strip()[1:].split("#", 1)[0].strip())
                self._nouns.update((noun, noun + "s", noun + "es"))
                continue
            term = parse_line(category, line)
            if term is None:
                continue
            key = self._key(term.term)
            if not key:
                continue
            words = key.split()
            if category == ALLOW:
                if _CJK.search(key) or len(words) > 1:
                    inside_allowed.append(key.replace(" ", ""))  # "カロリー" holds "ロリ", "whitepowerbank"
                for variant in self._phrase_variants(words):
                    phrases.setdefault(variant, []).append(None)
                continue
            self.terms.append(term)
            if term.group in (PERSON_GROUP, MINOR_GROUP, MINOR_GROUP + "x") and len(words) == 1:
                self._people.update(_forms(key, term.exact))
            if term.group.startswith(MINOR_GROUP) and len(key) >= 4 and " " not in key:
                minor_inside.setdefault(key, term)
            if len(words) > 1:
                base_phrase_words.update(_collapse(word) for word in words)
                gate_phrases.append((words, term))
                for variant in self._phrase_variants(words, term.exact):
                    phrases.setdefault(variant, []).append(term)
                joined = "".join(words)
                if len(joined) >= 6 and not _CJK.search(joined):
                    self._add_word(joined, term, fuzzy=len(joined) >= 9)  # "selfharm", "wearingnothing"
                if len(joined) >= 8 and not term.weak and not term.exact:
                    inside.setdefault(joined, []).append(term)  # "girlwearingnothingbutasmile"
                continue
            self._add_word(key, term)
            if term.colour:
                self._colour_forms.update(_forms(key, term.exact))
            if term.inside:
                inside.setdefault(key, []).append(term)
        for key, found in inside.items():
            self._inside.add_word(key, (key, tuple(found)))
        for key in inside_allowed:
            if key not in inside:
                self._inside.add_word(key, (key, ()))
        self._has_inside = bool(inside)
        if self._has_inside:
            self._inside.make_automaton()
        for key, minor in minor_inside.items():
            self._minor_inside.add_word(key, minor)
        if minor_inside:
            self._minor_inside.make_automaton()
        for key, entries in phrases.items():
            self._phrases.add_word(f" {key} ", (key, tuple(entries)))
            self._first_words.add(key.split()[0])
            for word in key.split():
                self._phrase_words.add(word)
        self._base_phrase_words = base_phrase_words
        short_fixes: dict[str, set[str]] = {}
        for word in base_phrase_words:
            if 3 <= len(word) <= 4 and word.isalpha():
                for variant in _deletions(word) - base_phrase_words:
                    short_fixes.setdefault(variant, set()).add(word)
        self._short_fix = {k: next(iter(v)) for k, v in short_fixes.items() if len(v) == 1 and len(k) >= 2}
        for word in base_phrase_words:
            if len(word) >= 5 and word.isalpha() and word.isascii():
                for variant in {word} | _deletions(word):
                    self._phrase_fuzzy.setdefault(variant, []).append(word)
        for form, found in self._word.items():
            usable = tuple(t for t in found if len(form) >= (4 if t.weak else 5))
            if usable and form.isascii() and form.isalpha() and form not in _COMPOUND_STOP:
                self._compound.add_word(form, usable)
        for words, term in gate_phrases:  # one rare word of each listed phrase gates the fast path
            ranked = sorted(
                enumerate(words),
                key=lambda iw: (
                    any(not t.weak for t in self._word.get(iw[1], ())),
                    iw[1] not in _FREQUENT and iw[1] not in _COMMON and not iw[1].isdigit(),
                    not any(t.weak for t in self._word.get(iw[1], ())),
                    len(iw[1]),
                    iw[0],
                ),
            )
            position, gate = ranked[-1]
            others = tuple(_collapse(w) for i, w in enumerate(words) if i != position)
            last = _collapse(words[-1]) if position != len(words) - 1 else ""
            for form in _forms(gate, term.exact) if position == len(words) - 1 else {gate}:
                self._gates.setdefault(_collapse(form), set()).add((others, last))
        # the same, ready for `_gates_complete`: (words that must be present, start of the inflectable last word)
        self._gate_needs: dict[str, list[tuple[frozenset[str], str]]] = {
            gate: [
                (
                    frozenset(w for w in others if w != last),
                    last[: max(3, len(last) - 2)] if last in others else "",
                )
                for others, last in entries
            ]
            for gate, entries in self._gates.items()
        }
        for form in [*self._word, *self._collapsed]:
            self._prefixes.update(form[:i] for i in range(1, len(form) + 1))
        self._has_compound = len(self._compound) > 0
        if self._has_compound:
            self._compound.make_automaton()
        self._has_phrases = bool(phrases)
        if self._has_phrases:
            self._phrases.make_automaton()
        self.categories = sorted({t.category for t in self.terms})

    @staticmethod
    def _key(text: str) -> str:
        """A list term as the matcher sees words: folded, leetspeak read."""
        return " ".join(read for read, _, _ in words_of(fold(text)))

    @staticmethod
    def _phrase_variants(words: list[str], exact: bool = False) -> set[str]:
        head = [_collapse(word) for word in words[:-1]]
        return {" ".join([*head, _collapse(form)]) for form in _forms(words[-1], exact)}

    def _add_word(self, key: str, term: Term, fuzzy: bool = True) -> None:
        for form in _forms(key, term.exact):
            self._word.setdefault(form, []).append(term)
            collapsed = _collapse(form)
            if len(collapsed) >= 4 and collapsed not in _COLLAPSE_STOP:
                self._collapsed.setdefault(collapsed, []).append(term)
        if not fuzzy:
            return
        if term.exact and not term.weak:
            if len(key) >= 5 and key.isascii() and key.isalpha():
                for i in range(1, len(key) - 1):  # "nigegr": one swap of neighbours
                    swapped = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
                    if swapped != key:
                        self._word.setdefault(swapped, []).append(term)
            return
        if key.isascii() and key.isalpha() and (len(key) >= 6 if not term.weak else len(key) >= 7):
            for variant in {key} | _deletions(key):
                self._fuzzy.setdefault(variant, []).append((key, term))
        elif not term.weak and 4 <= len(key) <= 5 and key.isascii() and key.isalpha():
            for i in range(1, len(key) - 1):  # "nakde", "ndues": one swap of neighbours (not the first letter)
                swapped = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
                if swapped != key:
                    self._word.setdefault(swapped, []).append(term)

    @classmethod
    def from_sources(cls, sources: Sequence[str]) -> PromptFilter:
        """`sources`: `builtin`, list files, or directories of `*.txt` lists."""
        return cls(term for source in sources for term in _read_source(source))

    # --- matching ----------------------------------------------------------------------------------------------

    def _word_terms(self, word: str, inside: bool = True, fuzzy: bool = True) -> tuple[Term, ...]:
        """The terms one word is (or, with `inside`, holds), cached: catalogue prompts reuse a small vocabulary."""
        cache = self._cache if inside else self._piece_cache if fuzzy else self._exact_cache
        cached = cache.get(word)
        if cached is not None:
            return cached
        found: list[Term] = list(self._word.get(word, ()))
        if not found:
            collapsed = _collapse(word)
            found.extend(self._collapsed.get(collapsed, ()))
            if not found and collapsed != word:
                found.extend(self._word.get(collapsed, ()))
        if not found and inside and self._has_inside and len(word) >= 3:
            spans = [(end - len(key) + 1, end + 1, terms) for end, (key, terms) in self._inside.iter(word)]
            allowed = [(start, end) for start, end, terms in spans if not terms]
            for start, end, terms in spans:
                if terms and not any(a <= start and end <= b for a, b in allowed):
                    found.extend(terms)
        if fuzzy and not found and len(word) >= 5 and word not in _FUZZY_STOP and self._fuzzy and word.isalpha():
            for variant in {word} | _deletions(word):
                for key, term in self._fuzzy.get(variant, ()):
                    if key[0] == word[0] and _edit_distance_at_most_one(key, word):
                        found.append(term)
        result = tuple({id(t): t for t in found}.values())
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        cache[word] = result
        return result

    def _compound_terms(self, word: str) -> tuple[Term, ...]:
        """Terms run together in one long word ("womanshowinghertits", "teenagegirlstripping"): every listed
        word of 4+ letters found inside (5+ for strong terms); weak ones still need a partner of another group."""
        cached = self._compound_cache.get(word)
        if cached is not None:
            return cached
        found: list[Term] = []
        if self._has_compound and len(word) >= 12:
            for _, terms in self._compound.iter(word):
                found.extend(terms)
        if len(word) >= _SEGMENT_MIN:
            found.extend(self._segment_terms(word))
        result = tuple({id(t): t for t in found}.values())
        if len(self._compound_cache) > _CACHE_LIMIT:
            self._compound_cache.clear()
        self._compound_cache[word] = result
        return result

    def _segment_terms(self, word: str) -> list[Term]:
        """Short listed words (2–4 letters) in a word run together of function words, prompt words and listed
        words ("meninanuanapraia" = menina|nua|na|praia, "enfantnusurlaplage", "pedopicsofkids"): the word is
        split (dynamic programming: most letters in known words, then fewest pieces, unknown letters allowed),
        and a listed word counts when both its neighbours are known words or the word's ends, one of them a
        listed word or a prompt word of 3+ letters, and, for two or three letters, a person or minor word."""
        if len(word) > 48 or not word.isascii() or not word.isalpha():
            return []
        known, listed = _SEGMENT_WORDS, self._word
        count = len(word)
        best: list[tuple[int, int]] = [(0, 0)] + [(-1, 0)] * count  # (letters in known words, -pieces)
        back: list[int] = [0] * (count + 1)
        for end in range(1, count + 1):
            covered, pieces = best[end - 1]
            best[end], back[end] = (covered, pieces - 1), end - 1  # an unknown letter
            for start in range(max(0, end - 16), end - 1):
                piece = word[start:end]
                if piece in known or (piece in listed and len(piece) >= 2):
                    score = (best[start][0] + end - start, best[start][1] - 1)
                    if score > best[end]:
                        best[end], back[end] = score, start
        spans: list[tuple[str, bool]] = []
        end = count
        while end > 0:
            start = back[end]
            piece = word[start:end]
            is_known = end - start >= 2 and (piece in known or piece in listed)
            if not is_known and spans and not spans[-1][1]:
                spans[-1] = (piece + spans[-1][0], False)  # unknown letters merge into one piece
            else:
                spans.append((piece, is_known))
            end = start
        spans.reverse()
        found: list[Term] = []
        for index, (piece, is_known) in enumerate(spans):
            if not is_known or not 2 <= len(piece) <= 4 or piece not in listed:
                continue
            sides = [spans[i] for i in (index - 1, index + 1) if 0 <= i < len(spans)]
            if not sides or not all(known_side for _, known_side in sides):
                continue
            if len(piece) <= 3:
                if self._people.isdisjoint(side for side, _ in sides):
                    continue
            elif not any(side in listed or (side in known and len(side) >= 3) for side, _ in sides):
                continue
            found.extend(t for t in listed[piece] if t.category != ALLOW)
        return found

    def _canon(self, word: str) -> str:
        """A word as phrases are matched: repeated letters collapsed, one typo away from a phrase word fixed."""
        cached = self._canon_cache.get(word)
        if cached is not None:
            return cached
        canon = _collapse(word)
        if canon not in self._phrase_words and canon in self._short_fix:
            canon = self._short_fix[canon]  # "in he buff": a letter dropped from a short word of a phrase
        if canon not in self._phrase_words and len(canon) == 4 and canon.isalpha():
            for i in range(1, 3):  # "haed" → "head"
                swapped = canon[:i] + canon[i + 1] + canon[i] + canon[i + 2 :]
                if swapped in self._base_phrase_words:
                    canon = swapped
                    break
        if canon not in self._phrase_words and len(canon) >= 4 and canon.isalpha():
            for variant in {canon} | _deletions(canon):
                fixed = [w for w in self._phrase_fuzzy.get(variant, ()) if w[0] == canon[0]]
                if fixed and _edit_distance_at_most_one(fixed[0], canon):
                    canon = fixed[0]
                    break
        if len(self._canon_cache) > _CACHE_LIMIT:
            self._canon_cache.clear()
        self._canon_cache[word] = canon
        return canon

    def _token_state(self, token: str) -> frozenset[tuple[str, str]] | bool:
        """What one word of a plain-ASCII prompt can do by itself, cached: True (nothing), the (category, group)
        pairs of the weak terms it is (which block only with another group), or False: a strong term, a typo,
        leetspeak or compound of one, or the gate word of a blocked phrase. Joins with neighbours are checked
        by `_no_joins`."""
        state = self._state.get(token)
        if state is not None:
            return state
        core = token.rstrip("!|+¡")
        read = _read(core) if core else ""
        terms = list(self._word_terms(read))
        if not core.isalpha() and _LETTER.search(core):
            for variant in _leet_variants(core):
                terms.extend(self._word_terms(variant))
                if len(variant) >= _SEGMENT_MIN and variant.isalpha():
                    terms.extend(self._compound_terms(variant))
        if len(read) >= _SEGMENT_MIN and read.isalpha():
            terms.extend(self._compound_terms(read))
        groups = {(t.category, t.group) for t in terms}
        for reading in _leet_variants(core) | {read} if not core.isalpha() and _LETTER.search(core) else (read,):
            for gate in {self._canon(reading), _collapse(reading)}:
                if gate in self._gates:
                    groups.add((_GATE, gate))  # a phrase may be here: `_phrase_possible` looks for its other words
        strong = [t for t in terms if not t.weak]
        if strong and read == token and all(t.colour for t in strong) and read in self._colour_forms:
            groups.add((_COLOUR, ""))  # "nude": `_plain_colours` decides, or the full reading
            strong = []
        result: frozenset[tuple[str, str]] | bool
        if (
            strong
            or _REPEAT3.search(read)
            or (len(read) <= 3 and _REPEATS.search(read) and read not in _COMMON and read.isalpha())
        ):
            result = False  # a strong term, a strong phrase's gate, or letters repeated to disguise a word
        else:
            result = frozenset(groups) or True
        if len(self._state) > _CACHE_LIMIT:
            self._state.clear()
        self._state[token] = result
        return result

    def check(self, prompt: str) -> Match | None:
        """The first blocked term (or weak combination) the prompt asks for, or None.

        Plain-ASCII prompts whose every word is known to be clean, and no two neighbours of which join into a
        listed word ("nu de", "top-less"), are passed without the full reading below: that is most catalogue
        text, at a few microseconds."""
        if not self.terms:
            return None
        folded = low = prompt.lower() if prompt.isascii() else fold(prompt)  # accents, look-alikes, invisibles undone
        if low.isascii():
            if "'" in low or "`" in low:
                low = _POSSESSIVE.sub("", low)
            tokens = _ASCII_TOKEN.findall(low)
            states = list(map(self._state.get, tokens))
            if None in states:
                states = [self._token_state(token) for token in tokens]
            if False in states:
                return self._check(prompt, folded)
            if states.count(True) != len(states):  # weak words, phrase gates or colours
                weak = [state for state in states if state is not True]
                groups: frozenset[tuple[str, str]] = frozenset().union(*weak)  # type: ignore[arg-type]
                plan = self._plans.get(groups)
                if plan is None:
                    plan = self._plans[groups] = _plan(groups)
                    if len(self._plans) > _CACHE_LIMIT:
                        self._plans.clear()
                gates, combine = plan
                if gates and self._phrase_possible(gates, tokens):
                    return self._check(prompt, folded)
                if combine or (combine is None and _minor_age(low, tokens)):
                    return self._check(prompt, folded)
                if not self._colour_forms.isdisjoint(tokens):
                    colours = [i for i, token in enumerate(tokens) if token in self._colour_forms]
                    if not self._plain_colours(colours, tokens, low):
                        return self._check(prompt, folded)
            if self._no_joins(tokens, low):
                return None
        return self._check(prompt, folded)

    def _phrase_possible(self, gates: list[str], tokens: list[str]) -> bool:
        """Whether all other words of a phrase whose gate word is in the prompt are there too (typos fixed)."""
        cached = list(map(self._readings.get, tokens))
        if None not in cached:
            present: set[str] = set().union(*cached)  # type: ignore[arg-type]
            return self._gates_complete(gates, present)
        present = set()
        for token in tokens:
            readings = self._readings.get(token)
            if readings is None:
                core = token.rstrip("!|+¡")
                found: set[str] = set()
                for reading in _leet_variants(core) | {_read(core)} if not core.isalpha() else (core,):
                    found.update((self._canon(reading), _collapse(reading)))
                readings = self._readings[token] = frozenset(found)
                if len(self._readings) > _CACHE_LIMIT:
                    self._readings.clear()
            present.update(readings)
        return self._gates_complete(gates, present)

    def _gates_complete(self, gates: list[str], present: set[str]) -> bool:
        """Whether, for one of these gate words, a phrase's other words are all present: the last one may be
        inflected (its start, all but two letters and at least three, is enough)."""
        for gate in gates:
            for needed, last in self._gate_needs[gate]:
                if present.issuperset(needed) and (
                    not last or last in present or any(map(str.startswith, present, itertools.repeat(last)))
                ):
                    return True
        return False

    def _plain_colours(self, colours: list[int], tokens: list[str], low: str) -> bool:
        """Whether each `%` word of a plain prompt ("nude") has a product or colour noun within two words, or is
        set off as an attribute ("…, nude, M"), with no person word within two words; anything less certain goes
        to the full reading."""
        attributes = 0
        for index in colours:
            if not self._people.isdisjoint(tokens[max(index - 2, 0) : index] + tokens[index + 1 : index + 3]):
                return False
            if self._nouns.isdisjoint(tokens[max(index - 2, 0) : index] + tokens[index + 1 : index + 3]):
                if tokens[index] not in _COLOUR_WORDS:
                    return False
                attributes += 1
        return attributes == 0 or len(_ATTRIBUTE_COLOUR.findall(low)) >= attributes

    def _no_joins(self, tokens: list[str], low: str) -> bool:
        """No two neighbours join into a listed word ("top less"), and no run of short pieces does ("se xy",
        "n u d e", "p 0 r n"), read as `_joined_hits` reads them but only exactly: joins are extended while they
        are the start of a listed word, so most prompts cost a few set look-ups."""
        joins = list(map(operator.add, tokens, tokens[1:]))
        if not self._word.keys().isdisjoint(joins):
            return False  # two neighbours join into a listed word form
        if _SPLIT_AT.search(low):
            pairs = self._pair_cache
            for pair in _SPLIT_PAIR.finditer(low):
                key = pair.group(1, 2, 3)
                clean = pairs.get(key)
                if clean is None:
                    clean = self._pair_clean(*key)
                    if len(pairs) > _CACHE_LIMIT:
                        pairs.clear()
                    pairs[key] = clean
                if not clean:
                    return False
        shape = "".join(map(_SHAPES.get, map(len, tokens), itertools.repeat("L")))
        if "s" not in shape and "mm" not in shape:
            return True
        for run in _SHORT_RUN.finditer(shape):  # runs of short pieces, as `_joined_hits` reads them
            low_end, end = max(run.start() - 1, 0), run.end()
            window = tuple(tokens[low_end : end + 1])
            clean = self._run_cache.get(window)
            if clean is None:
                clean = self._run_clean(list(window), run.start() - low_end, end - low_end)
                if len(self._run_cache) > _CACHE_LIMIT:
                    self._run_cache.clear()
                self._run_cache[window] = clean
            if not clean:
                return False
        return True

    def _pair_clean(self, first: str, separator: str, second: str) -> bool:
        """Two pieces joined by an in-word separator ("self-ahrm", "p*rn", "self-harmaesthetic") are no listed
        word, typo of one, or words run together; cached by `_no_joins`."""
        joined = first + second
        read = joined if joined.isalpha() else _read(joined)
        if len(joined) >= 5 and self._word_terms(read, inside=False):
            return False  # "self-ahrm": a typo across a hyphen
        if len(read) >= _SEGMENT_MIN and read.isalpha() and self._compound_terms(read):
            return False  # "self-harmaesthetic": words run together across a hyphen
        if separator == "*" and any(self._word_terms(_read(first + v + second), inside=False) for v in "aeiou"):
            return False  # "p*rn"
        return True

    def _run_clean(self, tokens: list[str], start: int, end: int) -> bool:
        """One run of short pieces `tokens[start:end]` with a neighbour on each side: no join of it is a listed
        word (exactly, or with a typo where letters are spread out); cached by `_no_joins`."""
        words, prefixes = self._word, self._prefixes
        count = len(tokens)
        if end - start >= 4 and sum(len(t) <= 2 for t in tokens[start:end]) >= 2 and self._has_inside:
            whole = _read("".join(tokens[start:end]))
            if any(terms for _, (_, terms) in self._inside.iter(whole)):
                return False
        for first in range(max(start - 1, 0), min(end + 1, count)):
            text = tokens[first]
            spread = _spread_piece(text)
            if not spread and text not in prefixes and (text.isalpha() or _read(text) not in prefixes):
                if not any(_spread_piece(t) for t in tokens[first + 1 : end + 1]):
                    continue  # no listed word starts here, and no spread letters follow
            for last in range(first + 1, min(first + 24, end + 1, count)):
                text += tokens[last]
                spread = spread or _spread_piece(tokens[last])
                read = text if text.isalpha() else _read(text)
                if read not in prefixes:
                    if not spread:
                        break
                    if len(read) >= 5 and self._word_terms(read, inside=False):
                        return False  # a typo in a spread word ("n u d i t t y")
                elif (
                    read in words
                    and not _COMMON.issuperset(tokens[first : last + 1])
                    and not (
                        _COMMON.issuperset(tokens[first + 1 : last + 1])
                        and all(any(t is o for o in words.get(tokens[first], ())) for t in words[read])
                    )
                ):
                    return False
        return True

    def _check(self, prompt: str, folded: str | None = None) -> Match | None:
        """The full reading of a prompt (see the module docstring)."""
        folded = fold(prompt) if folded is None else folded
        if not folded.isascii() and _CJK.search(folded):
            folded = _CJK_SPREAD.sub("", folded)  # "裸 体", "纳*粹"
        reads: list[str] = []
        raws: list[str] = []
        seps: list[str] = []
        for read, raw, sep in words_of(folded):
            reads.append(read)
            raws.append(raw)
            seps.append(sep)
        hits: list[_Hit] = []
        for index, word in enumerate(reads):
            for term in self._word_terms(word):
                hits.append(_Hit(term, index, index + 1))
            raw = raws[index]
            if not raw.isalpha() and _LETTER.search(raw):  # leetspeak read other ways: "1" as "l", "53x"
                for other in _leet_variants(raw) - {word}:
                    found = self._word_terms(other)
                    hits.extend(_Hit(t, index, index + 1) for t in found)
                    if found or other in self._phrase_words:
                        reads[index] = other
        hits.extend(self._joined_hits(reads, raws, seps))
        for index, word in enumerate(reads):
            if len(word) >= _SEGMENT_MIN and word.isalpha():
                hits.extend(_Hit(t, index, index + 1) for t in self._compound_terms(word))
        excused: set[int] = set()
        canon = [self._canon(word) for word in reads] if self._has_phrases else reads
        if self._has_phrases and not self._first_words.isdisjoint(canon):
            line = " " + " ".join(canon) + " "
            starts = _word_starts(canon)
            for end, (key, entries) in self._phrases.iter(line):
                first = starts.get(end - len(key), -1)
                if first < 0:
                    continue
                last = first + key.count(" ") + 1
                for entry in entries:
                    if entry is None:
                        excused.update(range(first, last))
                    else:
                        hits.append(_Hit(entry, first, last))
        if not hits:
            return None
        if excused:
            hits = [h for h in hits if not excused.issuperset(range(h.start, h.end))]
        hits = [h for h in hits if not (h.term.colour and self._colour_sense(reads, seps, h, folded))]
        return self._decide(hits, folded, reads) if hits else None

    def _joined_hits(self, reads: list[str], raws: list[str], seps: list[str]) -> Iterator[_Hit]:
        """Words spread over separators: "nu-de", "top-less" (two words joined inside a word), and runs of
        pieces of up to three letters ("n u d e", "se xy", "nak ed", "nu dity"), each aligned sub-run that has
        a one- or two-letter piece read as one word."""
        count = len(reads)
        for index in range(1, count):
            sep = seps[index]
            if sep and " " not in sep and _INWORD_SEPARATOR.fullmatch(sep):
                joined = _read(raws[index - 1] + raws[index])
                for term in self._word_terms(joined, inside=False):
                    yield _Hit(term, index - 1, index + 1)
                if len(joined) >= _SEGMENT_MIN and joined.isalpha():  # "self-harmaesthetic"
                    for term in self._compound_terms(joined):
                        yield _Hit(term, index - 1, index + 1)
                if sep == "*":  # "p*rn", "n*de": a star for one letter
                    for vowel in "aeiou":
                        for term in self._word_terms(_read(raws[index - 1] + vowel + raws[index]), inside=False):
                            yield _Hit(term, index - 1, index + 1)
        index = 0
        while index < count:
            if len(reads[index]) > 3:
                index += 1
                continue
            end = index + 1
            while end < count and len(reads[end]) <= 3 and len(seps[end]) <= 3:
                end += 1
            if end - index >= 2 or len(reads[index]) <= 2:
                low, high = max(index - 1, 0), min(end + 1, count)
                for first in range(low, high):
                    text = raws[first]
                    short = len(text) <= 2
                    for last in range(first + 1, min(first + 24, high)):
                        text += raws[last]
                        short = short or len(reads[last]) <= 2
                        if short or (last - first != 1 and first >= index) or (len(text) >= 6 and first >= index):
                            if (
                                _COMMON.issuperset(reads[first : last + 1])
                                or raws[first].isdigit()
                                or raws[last].isdigit()
                            ):
                                continue  # "pen is", "the rap is", "nude, 4 g": words, not a spread one
                            spread = any(_spread_piece(r) for r in reads[first : last + 1])  # typos only then
                            own = (
                                self._word.get(reads[first], ())
                                if _COMMON.issuperset(reads[first + 1 : last + 1])
                                else ()
                            )
                            for joined in _leet_variants(text) if not text.isalpha() else (text,):
                                for term in self._word_terms(joined, inside=False, fuzzy=spread):
                                    if not any(term is t for t in own):  # "nude à" is "nude", not "nudea"
                                        yield _Hit(term, first, last + 1)
                pieces = raws[index:end]
                if len(pieces) >= 4 and sum(len(p) <= 2 for p in pieces) >= 2 and self._has_inside:
                    whole = _read("".join(pieces))  # "noc lot hes on": chunks that do not fall on word ends
                    for _, (_, terms) in self._inside.iter(whole):
                        yield from (_Hit(term, index, end) for term in terms)
            index = end

    def _colour_sense(self, reads: list[str], seps: list[str], hit: _Hit, folded: str) -> bool:
        """A `%` term ("nude") means a colour two words or fewer from a product or colour noun ("nude heels"),
        or set off as an attribute ("…, nude, 38", "in Nude") in a prompt about no one ("women's" is an audience,
        not a person) — unless a person word sits right next to it ("nude model, leather jacket")."""
        if hit.end - hit.start != 1 or reads[hit.start] not in self._colour_forms:
            return False  # "nudewoman", "n u d e": not a colour
        owners = set(_OWNER.findall(folded)) if "'" in folded or "’" in folded else set()  # "women's shoes"
        audience = {
            reads[i]
            for i in range(1, len(reads))
            if reads[i - 1] in _FOR
            or (reads[i - 1] in self._nouns and reads[i - 1] not in self._colour_forms)
            or (i > 1 and reads[i - 1] in _OF and reads[i - 2] in self._nouns)  # "vestido de niña"
            or (i > 1 and reads[i - 1] in self._colour_forms and reads[i - 2] in self._nouns)  # "zapatillas nude mujer"
        }
        audience |= owners  # "for women", "Women's", "Robe fille", "Scarpe bambino": who it is for
        beside = reads[max(hit.start - 1, 0) : hit.start] + reads[hit.end : hit.end + 1]
        if not self._people.isdisjoint(set(beside) - audience):
            return False
        if not self._nouns.isdisjoint(reads[max(hit.start - 2, 0) : hit.start] + reads[hit.end : hit.end + 2]):
            return True
        if reads[hit.start] not in _COLOUR_WORDS:
            return False
        start = hit.start - 1 if hit.start > 0 and reads[hit.start - 1] in _ATTRIBUTE_BEFORE else hit.start
        before = start == 0 or start != hit.start or any(c in seps[start] for c in ",(/|;:-–[")
        after = (
            hit.end == len(reads)
            or any(c in seps[hit.end] for c in ",)/|;:-–]")
            or (reads[hit.end] in _ATTRIBUTE_AFTER)
        )
        if not (before and after):
            return False
        if start != hit.start and reads[start] != "the":
            return True  # "in nude", "en nude": a colour, whoever wears it ("in the nude" is listed)
        near = set(reads[max(hit.start - 2, 0) : hit.start] + reads[hit.end : hit.end + 2]) & self._people
        return not near - audience  # audiences are fine: "for women", "Women's", "para mujer"

    def _decide(self, hits: list[_Hit], folded: str, reads: list[str]) -> Match | None:
        """Strong terms block (minors first); weak ones in pairs of groups; a minor word or an age under 18 with
        any sexual term makes the match `minors`."""
        sexual = [h for h in hits if h.term.category == SEXUAL and h.term.group != PERSON_GROUP]
        strong = [h for h in hits if not h.term.weak]
        if sexual:
            minor = [h.term.term for h in hits if h.term.group == MINOR_GROUP]
            if not minor and any(not h.term.weak for h in sexual):
                minor = [h.term.term for h in hits if h.term.group == MINOR_GROUP + "x"]
            if not minor:
                any_strong = any(not h.term.weak for h in sexual)
                for word in reads:
                    if len(word) >= 8 and len(self._minor_inside) and word not in self._people:
                        minor.extend(
                            t.term for _, t in self._minor_inside.iter(word) if t.group == MINOR_GROUP or any_strong
                        )
            who = minor[0] if minor else _minor_age(folded, reads)
            if who:
                return Match(MINORS, f"{who} + {sexual[0].term.term}")
        for hit in sorted(strong, key=lambda h: h.term.category != MINORS):
            return Match(hit.term.category, hit.term.term)
        groups: dict[str, dict[str, str]] = {}
        audience = _audience(folded, reads)
        for hit in hits:
            if hit.term.group == PERSON_GROUP and hit.end - hit.start == 1 and reads[hit.start] in audience:
                continue  # "boob tube top, women's": who it is for, not who is in it
            if hit.term.group != TEASE_GROUP:  # sexualising only with a minor word or an age
                groups.setdefault(hit.term.category, {}).setdefault(hit.term.group, hit.term.term)
        for category, found in groups.items():
            if category != MINORS and len(found) >= 2:
                return Match(category, " + ".join(list(found.values())[:2]))
        return None


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) > 1:
        return False
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return (
            a[i + 1 :] == b[i + 1 :]
            or (  # substitution, or a swap of two neighbours
                i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
            )
        )
    return a[i:] == b[i + 1 :]


_SEGMENT_MIN = 8  # words this long are also read as words run together (`_segment_terms`)
# Function words of the supported Latin-script languages and common prompt words: the known pieces that words run
# together are split into (with the listed words themselves).
_SEGMENT_WORDS = frozenset(
    """
    a an the of on in at to for with and or by from into onto her his its their my your our no not without
    over under near by next is are being getting having
    photo photos pic pics picture pictures image images video videos poster posters rally rallies art artwork
    aesthetic aesthetics style scene shot shots beach pool bed bath bathtub room shower party street park forest
    de da do das dos del la las el los lo un una uno unos unas y e o en em no na nos nas con sin sem com para por
    pelo pela al au aux du des le les et ou sur sous dans avec sans pour une
    der die das den dem des ein eine einen und oder mit ohne im am auf bei fur von zu zum zur
    il lo gli di del della dei delle sul sulla nel nella col senza per
    foto fotos imagen bild bilder immagine playa praia plage strand spiaggia cama lit bett letto piscina
    """.split()
)
_SHORT_RUN = re.compile(r"[sm]{2,}|s")
_SHAPES = {0: "s", 1: "s", 2: "s", 3: "m"}  # a word's length → its shape in `_no_joins` ("L" above)
_SPLIT_AT = re.compile(r"[a-z0-9$@!|+][-=._*~^:/\\]+[a-z0-9$@!|+]")  # where `_SPLIT_PAIR` can match
_COLOUR = "\x00colour"  # marks a `%` word ("nude") among a word's (category, group)s
_GATE = "\x00gate"  # marks a phrase's gate word among a word's (category, group)s
_DIGIT = re.compile(r"\d")
_SPLIT_PAIR = re.compile(r"([a-z0-9$@!|+]+)([-=._*~^:/\\]+)(?=([a-z0-9$@!|+]+))")
_ASCII_TOKEN = re.compile(r"[a-z0-9$@!|+]+")
_REPEAT3 = re.compile(r"([a-z])\1\1")
_FREQUENT = {
    "white",
    "black",
    "power",
    "with",
    "without",
    "wearing",
    "head",
    "blood",
    "girl",
    "woman",
    "women",
    "man",
    "men",
    "off",
    "her",
    "his",
    "the",
    "and",
    "for",
    "body",
    "pool",
    "cross",
    "flag",
    "words",
    "scene",
    "photo",
    "video",
    "party",
    "position",
    "shot",
    "service",
    "content",
    "film",
    "petit",
    "fille",
    "femme",
    "homme",
    "school",
    "birthday",
    "suit",
    "bath",
    "strap",
    "lingerie",
    "picture",
    "pictures",
    "cut",
    "mate",
    "matte",
    "rouge",
    "tote",
    "sensual",
    "bloody",
    "teen",
    "nipples",
    "little",
    "young",
    "small",
}
_COMPOUND_STOP = {"mann", "frau", "kind", "kinder", "junge", "dame", "herr", "male", "lady"}
_COMMON = {
    "a",
    "i",
    "is",
    "it",
    "in",
    "on",
    "an",
    "as",
    "at",
    "be",
    "by",
    "do",
    "go",
    "he",
    "if",
    "me",
    "my",
    "no",
    "of",
    "or",
    "so",
    "to",
    "up",
    "us",
    "we",
    "the",
    "and",
    "for",
    "pen",
    "art",
    "are",
    "but",
    "not",
    "you",
    "all",
    "can",
    "her",
    "was",
    "one",
    "our",
    "out",
    "day",
    "get",
    "has",
    "him",
    "his",
    "how",
    "man",
    "new",
    "now",
    "old",
    "see",
    "two",
    "way",
    "who",
    "boy",
    "did",
    "its",
    "let",
    "put",
    "say",
    "she",
    "too",
    "use",
    "de",
    "la",
    "le",
    "el",
    "en",
    "et",
    "y",
    "e",
    "un",
    "une",
    "der",
    "die",
    "das",
    "und",
    "ein",
    "mit",
    "con",
    "per",
    "set",
    "kit",
    "box",
    "cm",
    "mm",
    "ml",
    "kg",
    "xl",
    "xs",
    "xxl",
}


def _audience(folded: str, reads: list[str]) -> set[str]:
    """Person words that name who a product is for: possessives ("women's") and words after "for"/"para"/…"""
    owners = set(_OWNER.findall(folded)) if "'" in folded or "’" in folded else set()
    return owners | {reads[i] for i in range(1, len(reads)) if reads[i - 1] in _FOR}


def _spread_piece(piece: str) -> bool:
    """A one- or two-letter piece that is not a common word: letters spread out ("n u d e", "se xy")."""
    return len(piece) <= 2 and piece.isalpha() and piece not in _COMMON


def _plan(groups: frozenset[tuple[str, str]]) -> tuple[list[str], bool | None]:
    """For the (category, group)s of a plain prompt's words: the gate words of phrases to look for, and whether
    weak terms could block together (True), could not (False), or could if the prompt holds an age (None)."""
    gates = [word for category, word in groups if category == _GATE]
    real = frozenset(g for g in groups if g[0] != _GATE and g[0] != _COLOUR)
    if not real:
        return gates, False
    if _may_combine(real, "", []):
        return gates, True
    sexual = any(category == SEXUAL and group != PERSON_GROUP for category, group in real)
    return gates, None if sexual and all(category != MINORS for category, _ in real) else False


def _may_combine(groups: frozenset[tuple[str, str]], low: str, tokens: list[str]) -> bool:
    """Whether weak terms of these (category, group)s could block together: two groups of one category, a minor
    word with a sexual one, or a sexual one where an age may stand ("14yo", "twelve year old")."""
    by_category: dict[str, set[str]] = {}
    for category, group in groups:
        by_category.setdefault(category, set()).add(group)
    sexual = by_category.get(SEXUAL, set()) - {PERSON_GROUP}
    if any(len(found - {TEASE_GROUP}) > 1 for category, found in by_category.items() if category != MINORS):
        return True
    return bool(sexual) and (MINORS in by_category or bool(_minor_age(low, tokens)))


_AMBIGUOUS = {"1": "il", "!": "il", "|": "li"}


def _leet_variants(raw: str) -> set[str]:
    """Readings of a leetspeak word: "1", "!" and "|" may each be "i" or "l" ("|o1i" → "loli")."""
    base = raw.translate(_LEET)
    spots = [i for i, c in enumerate(raw) if c in _AMBIGUOUS][:4]
    variants = {base, raw.translate(_LEET_ALT)}
    for mask in range(1 << len(spots)):
        letters = list(base)
        for bit, spot in enumerate(spots):
            letters[spot] = _AMBIGUOUS[raw[spot]][(mask >> bit) & 1]
        variants.add("".join(letters))
    return variants


def _word_starts(reads: list[str]) -> dict[int, int]:
    """Character offset (in " " + " ".join(reads)) → word index."""
    starts: dict[int, int] = {}
    offset = 1
    for index, word in enumerate(reads):
        starts[offset] = index
        offset += len(word) + 1
    return starts


_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "zwolf": 12,
    "dreizehn": 13,
    "vierzehn": 14,
    "doce": 12,
    "trece": 13,
    "catorce": 14,
    "douze": 12,
    "treize": 13,
    "quatorze": 14,
}
_AGE = re.compile(
    r"(?<![\d.,])(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")\s*[-‐–]?\s*(?:"
    r"yo\b|y/o|y\.o\b|yrs?\s*[-‐–]?\s*old|years?\s*[-‐–]?\s*old|year\s*[-‐–]?\s*olds?|years?\s+of\s+age|"
    r"jahre?\s+alt|jahrige?n?|jaehrige?n?|ans\b|anos\b|anos\s+de\s+edad|anni\b|лет|года?\b|歳|岁|才|yr\b|y\b)"
)


def _minor_age(folded: str, reads: list[str]) -> str:
    """ "12 year old", "14yo", "13歳": an age under 18 in the prompt, as written; "" if none."""
    if not _DIGIT.search(folded) and _NUMBER_WORDS.keys().isdisjoint(reads):
        return ""
    for found in _AGE.finditer(folded):
        number = found.group(1)
        age = int(number) if number.isdigit() else _NUMBER_WORDS[number]
        if age < 18:
            return found.group()
    return ""


def _read_source(source: str) -> Iterable[tuple[str, str]]:
    path = BUILTIN_DIR if source == BUILTIN else Path(source).expanduser()
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"PIXELMILL_PROMPT_BLOCKLISTS: no list at {source!r}")
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.split("#", 1)[0].strip():
                yield file.stem, line


@functools.cache
def load(sources: tuple[str, ...]) -> PromptFilter:
    """The filter for these list sources, built once per process (building costs ~0.4 s of CPU: list forms and
    automata)."""
    return PromptFilter.from_sources(sources)


__all__ = ["ALLOW", "BUILTIN", "Match", "PromptFilter", "Term", "fold", "load", "normalise", "words_of"]

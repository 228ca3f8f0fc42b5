"""Building the prompt filter's indexes from list lines: word forms, typo neighbourhoods, phrases, words that may
sit inside others, and the gate words of phrases for the fast path. Built once per process (`load` caches)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import ahocorasick

from contract.promptfilter.concepts import Concepts
from contract.promptfilter.languages import COLLAPSE_STOP, COMMON, COMPOUND_STOP, FREQUENT
from contract.promptfilter.lexicon import (
    ALLOW,
    BUILTIN,
    MINOR_GROUP,
    PERSON_GROUP,
    Term,
    deletions,
    inflections,
    nickname_stems,
    parse_line,
    read_source,
    sound_key,
    sound_shape,
)
from contract.promptfilter.normalise import CJK, collapse, fold, leet_read, words_of

PRODUCT_SENSE = Term(ALLOW, "product sense")  # an allowed phrase that needs a product noun beside it (`+`)


@dataclass
class _Listed:
    """What reading the list lines gathers for the later steps of `Index.__init__`."""

    phrases: dict[str, list[Term | None]] = field(default_factory=dict)  # None: an allowed phrase
    inside: dict[str, list[Term]] = field(default_factory=dict)
    inside_allowed: list[str] = field(default_factory=list)
    minor_inside: dict[str, Term] = field(default_factory=dict)
    base_phrase_words: set[str] = field(default_factory=set)  # words of blocked phrases: typos are fixed to these
    gate_phrases: list[tuple[list[str], Term]] = field(default_factory=list)


class Index:
    """The lists, indexed for matching (the matching itself: `Lookup`, `Reading`, `PromptFilter`)."""

    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        """`terms`: (category, list line); the category `allow` lists phrases that are not a match although they
        contain a blocked term, and product/colour nouns (`&noun`) that give `%` terms their harmless sense."""
        self.terms: list[Term] = []
        self._word: dict[str, list[Term]] = {}  # a word form → the single-word terms it is
        self._collapsed: dict[str, list[Term]] = {}  # the same with repeated letters collapsed
        self._fuzzy: dict[str, list[tuple[str, Term]]] = {}  # deletion neighbourhood of long words
        self._sounds: dict[str, list[tuple[str, Term]]] = {}  # sound keys of strong words of 5+ letters (`sound_key`)
        self._shapes: dict[str, list[Term]] = {}  # `sound_shape`s of strong words (and plurals)
        # the shapes pet forms of strong words are built on → (the word's first two letters, the term)
        self._nicknames: dict[str, list[tuple[str, Term]]] = {}
        self._phrase_fuzzy: dict[str, list[str]] = {}  # the same for the words of phrases
        self._phrase_words: set[str] = set()
        self._inside = ahocorasick.Automaton()  # terms that may sit inside a word; allowed spans (no terms)
        self._minor_inside = ahocorasick.Automaton()  # minor words inside joined words ("niñadesnuda")
        self._phrases = ahocorasick.Automaton()  # multi-word terms and allowed phrases over " word word "
        self._nouns: set[str] = set()
        self._product_nouns: set[str] = set()  # `^noun` and `&noun`: what gives a `+` phrase its product sense
        self._dishes: set[str] = set()  # `@noun`: dishes and food words that give a `!` word its menu sense
        self._menu_words: set[str] = set()  # `!word`: mild words that name a dish's style ("slutty brownies")
        self._people: set[str] = set()  # forms of weak `person` and `minor` words
        self._colour_forms: set[str] = set()  # forms of `%` terms
        self._first_words: set[str] = set()  # the first word of each phrase (a quick "could a phrase start here")
        self._compound = ahocorasick.Automaton()  # every listed word form, for words run together
        # one word of each listed phrase → the phrase's other words (and its last word, which may be inflected)
        self._gates: dict[str, set[tuple[tuple[str, ...], str]]] = {}
        self._prefixes: set[str] = set()  # every start of a listed word form: joins stop when they leave it
        self._init_caches()
        self._concepts: Concepts | None = None  # the concept layer (`from_sources` with the builtin lists)
        listed = _Listed()
        for category, line in terms:
            self._read_line(category, line, listed)
        self._index_inside(listed)
        self._index_phrases(listed)
        self._index_compounds()
        self._index_gates(listed.gate_phrases)
        for form in [*self._word, *self._collapsed]:
            self._prefixes.update(form[:i] for i in range(1, len(form) + 1))
        live = self._live = frozenset("".join(self._word)) | frozenset("".join(self._collapsed))
        # Characters of plain words that no listed form holds, written or read as leetspeak, and that read as no
        # letter ("2"): a join that holds one is no listed word, no start of one, and (not alphabetic) no typo of
        # one (`fast_path._window_clean`).
        self._dead = frozenset(
            c for c in "0123456789$@!|+" if c not in live and leet_read(c) not in live and not leet_read(c).isalpha()
        )
        self._product_nouns |= self._nouns
        self.categories = sorted({t.category for t in self.terms})

    def _init_caches(self) -> None:
        """What matching remembers between prompts (each bounded by `lookup.CACHE_LIMIT`)."""
        self._cache: dict[str, tuple[Term, ...]] = {}
        self._piece_cache: dict[str, tuple[Term, ...]] = {}
        self._exact_cache: dict[str, tuple[Term, ...]] = {}
        self._run_cache: dict[tuple[str, ...], bool] = {}  # runs of short pieces with their neighbours
        self._plans: dict[frozenset[tuple[str, str]], tuple[list[str], bool | None]] = {}  # see `_plan`
        self._pair_cache: dict[tuple[str | Any, ...], bool] = {}  # pieces joined by a separator (`_no_joins`)
        self._readings: dict[str, frozenset[str]] = {}  # a word's readings for phrases (typos fixed, leetspeak)
        self._canon_cache: dict[str, str] = {}
        self._compound_cache: dict[str, tuple[Term, ...]] = {}
        self._sound_cache: dict[str, tuple[Term, ...]] = {}
        self._state: dict[str, frozenset[tuple[str, str]] | bool] = {}  # see `_token_state`

    def _read_line(self, category: str, line: str, listed: _Listed) -> None:
        """One list line: an `&noun`, an allowed phrase, or a term indexed by its word forms."""
        stripped = line.strip()
        if category == ALLOW and stripped[:1] in ("&", "^", "@", "!"):
            noun = self._key(stripped[1:].split("#", 1)[0].strip())
            nouns = {"&": self._nouns, "^": self._product_nouns, "@": self._dishes, "!": self._menu_words}[stripped[0]]
            nouns.update((noun, noun + "s", noun + "es") if stripped[0] != "!" else (noun,))
            return
        product = category == ALLOW and stripped.startswith("+")
        term = parse_line(category, stripped[1:] if product else line)
        if term is None:
            return
        key = self._key(term.term)
        if not key:
            return
        words = key.split()
        if category == ALLOW:
            if (CJK.search(key) or len(words) > 1) and not product:
                listed.inside_allowed.append(key.replace(" ", ""))  # "カロリー" holds "ロリ", "whitepowerbank"
            for variant in self._phrase_variants(words):
                listed.phrases.setdefault(variant, []).append(PRODUCT_SENSE if product else None)
            return
        self.terms.append(term)
        if term.group in (PERSON_GROUP, MINOR_GROUP, MINOR_GROUP + "x") and len(words) == 1:
            self._people.update(inflections(key, term.exact))
        if term.group.startswith(MINOR_GROUP) and len(key) >= 4 and " " not in key:
            listed.minor_inside.setdefault(key, term)
        if len(words) > 1:
            self._read_phrase(term, words, listed)
            return
        self._add_word(key, term)
        if term.colour:
            self._colour_forms.update(inflections(key, term.exact))
        if term.inside:
            listed.inside.setdefault(key, []).append(term)

    def _read_phrase(self, term: Term, words: list[str], listed: _Listed) -> None:
        """A listed phrase: its inflected variants, its words run together, its gate word (`_index_gates`)."""
        listed.base_phrase_words.update(collapse(word) for word in words)
        listed.gate_phrases.append((words, term))
        for variant in self._phrase_variants(words, term.exact):
            listed.phrases.setdefault(variant, []).append(term)
        joined = "".join(words)
        if len(joined) >= 6 and not CJK.search(joined):
            self._add_word(joined, term, fuzzy=len(joined) >= 9)  # "selfharm", "wearingnothing"
        if len(joined) >= 8 and not term.weak and not term.exact:
            listed.inside.setdefault(joined, []).append(term)  # "girlwearingnothingbutasmile"

    def _index_inside(self, listed: _Listed) -> None:
        """The automata of terms that may sit inside a word, of allowed spans, and of minor words. A CJK colour
        term next to a CJK product noun is an allowed span ("パンプスヌード": CJK text is read without spaces)."""
        for colour in (c for c in self._colour_forms if CJK.search(c)):
            for noun in (n for n in self._nouns if CJK.search(n) and not n.endswith(("s", "es"))):
                listed.inside_allowed += [noun + colour, colour + noun]
        for key, found in listed.inside.items():
            self._inside.add_word(key, (key, tuple(found)))
        for key in listed.inside_allowed:
            if key not in listed.inside:
                self._inside.add_word(key, (key, ()))
        self._has_inside = bool(listed.inside)
        if self._has_inside:
            self._inside.make_automaton()
        for key, minor in listed.minor_inside.items():
            self._minor_inside.add_word(key, minor)
        if listed.minor_inside:
            self._minor_inside.make_automaton()

    def _index_phrases(self, listed: _Listed) -> None:
        """The phrase automaton, and the typo fixes towards phrase words (a dropped letter, one typo)."""
        for key, entries in listed.phrases.items():
            self._phrases.add_word(f" {key} ", (key, tuple(entries)))
            self._first_words.add(key.split()[0])
            for word in key.split():
                self._phrase_words.add(word)
        base_phrase_words = self._base_phrase_words = listed.base_phrase_words
        short_fixes: dict[str, set[str]] = {}
        for word in base_phrase_words:
            if 3 <= len(word) <= 4 and word.isalpha():
                for variant in deletions(word) - base_phrase_words:
                    short_fixes.setdefault(variant, set()).add(word)
        self._short_fix = {k: next(iter(v)) for k, v in short_fixes.items() if len(v) == 1 and len(k) >= 2}
        for word in base_phrase_words:
            if len(word) >= 5 and word.isalpha() and word.isascii():
                for variant in {word} | deletions(word):
                    self._phrase_fuzzy.setdefault(variant, []).append(word)
        self._has_phrases = bool(listed.phrases)
        if self._has_phrases:
            self._phrases.make_automaton()

    def _index_compounds(self) -> None:
        """Every listed word form of 4+ letters (5+ for strong terms), for words run together."""
        for form, found in self._word.items():
            usable = tuple(t for t in found if len(form) >= (4 if t.weak else 5))
            if usable and form.isascii() and form.isalpha() and form not in COMPOUND_STOP:
                self._compound.add_word(form, usable)
        self._has_compound = len(self._compound) > 0
        if self._has_compound:
            self._compound.make_automaton()

    def _index_gates(self, gate_phrases: list[tuple[list[str], Term]]) -> None:
        """One rare word of each listed phrase gates the fast path: where it is, the phrase's other words are
        looked for (`_gates_complete`)."""
        for words, term in gate_phrases:
            ranked = sorted(
                enumerate(words),
                key=lambda iw: (
                    any(not t.weak for t in self._word.get(iw[1], ())),
                    iw[1] not in FREQUENT and iw[1] not in COMMON and not iw[1].isdigit(),
                    not any(t.weak for t in self._word.get(iw[1], ())),
                    len(iw[1]),
                    iw[0],
                ),
            )
            position, gate = ranked[-1]
            others = tuple(collapse(w) for i, w in enumerate(words) if i != position)
            last = collapse(words[-1]) if position != len(words) - 1 else ""
            for form in inflections(gate, term.exact) if position == len(words) - 1 else {gate}:
                self._gates.setdefault(collapse(form), set()).add((others, last))
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

    @staticmethod
    def _key(text: str) -> str:
        """A list term as the matcher sees words: folded, leetspeak read."""
        return " ".join(read for read, _, _ in words_of(fold(text)))

    @staticmethod
    def _phrase_variants(words: list[str], exact: bool = False) -> set[str]:
        head = [collapse(word) for word in words[:-1]]
        return {" ".join([*head, collapse(form)]) for form in inflections(words[-1], exact)}

    def _add_word(self, key: str, term: Term, fuzzy: bool = True) -> None:
        for form in inflections(key, term.exact):
            self._word.setdefault(form, []).append(term)
            collapsed = collapse(form)
            if len(collapsed) >= 4 and collapsed not in COLLAPSE_STOP and len(collapse(key)) >= 3:  # "kkking" → "king"
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
        if not term.weak and len(key) >= 3 and key.isascii() and key.isalpha() and len(sound_key(key)) >= 3:
            for form in inflections(key, False) if key.endswith(("e", "y")) else (key,):
                self._sounds.setdefault(sound_key(form), []).append((form, term))
        if not term.weak and len(key) >= 3 and key.isascii() and key.isalpha():
            self._index_shapes(key, term)
        if key.isascii() and key.isalpha() and (len(key) >= 6 if not term.weak else len(key) >= 7):
            for variant in {key} | deletions(key):
                self._fuzzy.setdefault(variant, []).append((key, term))
        elif not term.weak and 4 <= len(key) <= 5 and key.isascii() and key.isalpha():
            for i in range(1, len(key) - 1):  # "nakde", "ndues": one swap of neighbours (not the first letter)
                swapped = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
                if swapped != key:
                    self._word.setdefault(swapped, []).append(term)

    def _index_shapes(self, key: str, term: Term) -> None:
        """A strong word's `sound_shape` (and its plural's), and, from 4 letters, the shapes its pet forms are
        built on (`nickname_stems`) with its first two letters, when they hold two consonants: "nud" (nude), not
        "as"."""
        shape = sound_shape(key)
        if sum(c not in "aeiou" for c in shape) < 2:
            return
        for form in {key, key + "s", key + "es"} & inflections(key, False) | {key}:
            self._shapes.setdefault(sound_shape(form), []).append(term)
        if len(key) >= 4:
            for stem in nickname_stems(shape):
                self._nicknames.setdefault(stem, []).append((key[:2], term))

    @classmethod
    def from_sources(cls, sources: Sequence[str]) -> Self:
        """`sources`: `builtin`, list files, or directories of `*.txt` lists."""
        built = cls(term for source in sources for term in read_source(source))
        built._concepts = Concepts.builtin() if BUILTIN in sources else None  # with the builtin lists only
        return built

"""`PromptFilter`: `check` passes plain-ASCII prompts made of words already seen on a fast path (a `str.lower`,
one regex split, dict look-ups, and set look-ups over the joins of neighbouring words), and gives anything it
cannot clear to the full reading (`Reading._check`); `test_fast_path_agrees_with_the_full_reading` holds the
two together."""

from __future__ import annotations

import itertools
import operator
import re

from contract.promptfilter.glyphs import alternates
from contract.promptfilter.languages import ATTRIBUTE_COLOUR, COLOUR_WORDS, COMMON
from contract.promptfilter.lexicon import MINOR_GROUP, MINORS, PERSON_GROUP, SEXUAL, TEASE_GROUP
from contract.promptfilter.lookup import CACHE_LIMIT, SEGMENT_MIN
from contract.promptfilter.normalise import (
    CODE,
    LETTER,
    POSSESSIVE,
    REPEATS,
    code_letters,
    collapse,
    fold,
    joined_read,
    leet_variants,
    read_word,
)
from contract.promptfilter.rules import Match, Reading, minor_age, spread_piece

_SHORT_RUN = re.compile(r"[sm]{2,}|s")


_SHAPES = {0: "s", 1: "s", 2: "s", 3: "m"}  # a word's length → its shape in `_no_joins` ("L" above)


_SPLIT_AT = re.compile(r"[a-z0-9$@!|+][-=._*~^:/\\]+[a-z0-9$@!|+]")  # where `_SPLIT_PAIR` can match


_COLOUR = "\x00colour"  # marks a `%` word ("nude") among a word's (category, group)s


_GATE = "\x00gate"  # marks a phrase's gate word among a word's (category, group)s


_SPLIT_PAIR = re.compile(r"([a-z0-9$@!|+]+)([-=._*~^:/\\]+)(?=([a-z0-9$@!|+]+))")


_INERT = "\x00"  # a run window's left neighbour that `_run_clean` skips (`_window_clean`)


_ASCII_TOKEN = re.compile(r"[a-z0-9$@!|+]+")


_REPEAT3 = re.compile(r"([a-z])\1\1")


# Short words with a doubled letter that catalogue text is full of ("50% off"): not letters doubled to disguise.
_DOUBLED = frozenset("off all too see add egg odd inn bee fee tee zoo boo moo goo ebb".split())


class PromptFilter(Reading):
    """Matches prompts against category lists; build it once (`load` caches) and call `check` per prompt."""

    def check(self, prompt: str) -> Match | None:
        """The first blocked term (or weak combination) the prompt asks for, or None: the lexical reading of the
        prompt (`_lexical`), then of its other readings where letters are drawn with symbols or spelt between
        punctuation (`glyphs.alternates`), then the concept layer (`concepts`, builtin lists only)."""
        if not self.terms:
            return None
        folded = low = prompt.lower() if prompt.isascii() else fold(prompt)
        tokens: list[str] | None = None
        if low.isascii():
            if "'" in low or "`" in low:
                low = POSSESSIVE.sub("", low)
            tokens = _ASCII_TOKEN.findall(low)
        found = self._lexical(prompt, folded, low, tokens)
        if found is not None:
            return found
        others = alternates(prompt, self._known, tokens)
        for other in others:
            found = self._lexical(other)
            if found is not None:
                return found
        if self._concepts is None:
            return None
        if others or tokens is None or low != folded or not self._concepts.gates.keys().isdisjoint(tokens):
            for text in [prompt, *others]:
                folded = text.lower() if text.isascii() else fold(text)
                found = self._concept_match(folded) if self._concepts.gated(folded) else None
                if found is not None:
                    return found
        return None

    def _known(self, piece: str) -> str:
        """The word the lists know (a term, weak ones too, or a phrase's word) that a drawn piece read one way
        is, leetspeak read ("ki||" → "kill"), or "": which readings of "|{i||" `glyphs.alternates` tries."""
        for variant in sorted(leet_variants(piece)) if not piece.isalpha() else [fold(piece)]:
            if variant in self._word or variant in self._phrase_words or self._word_terms(variant):
                return variant
        return ""

    def _concept_match(self, folded: str) -> Match | None:
        """A concept pattern a folded prompt matches, as a match of its category (`minors` where a minor word or
        an age under 18 goes with a sexual concept), with `concept:<name>` as its term."""
        assert self._concepts is not None
        words = self._concepts.words(folded)
        concept = self._concepts.match(words)
        if concept is None:
            return None
        if concept.category == SEXUAL:
            minor = [w for w in words if any(t.group == MINOR_GROUP for t in self._word.get(w, ()))]
            who = minor[0] if minor else minor_age(folded, words)
            if who:
                return Match(MINORS, f"{who} + concept:{concept.name}")
        return Match(concept.category, f"concept:{concept.name}")

    def _lexical(
        self, prompt: str, folded: str | None = None, low: str = "", tokens: list[str] | None = None
    ) -> Match | None:
        """The lexical reading: listed terms, weak pairs and minors (`folded`, `low` and `tokens`: as `check`
        computed them, or None).

        Plain-ASCII prompts whose every word is known to be clean, and no two neighbours of which join into a
        listed word ("nu de", "top-less"), are passed without the full reading below: that is most catalogue
        text, at a few microseconds."""
        if not self.terms:
            return None
        if folded is None:
            folded = low = prompt.lower() if prompt.isascii() else fold(prompt)  # accents, look-alikes undone
        if tokens is None and low.isascii():
            if "'" in low or "`" in low:
                low = POSSESSIVE.sub("", low)
            tokens = _ASCII_TOKEN.findall(low)
        if tokens is not None:
            states = list(map(self._state.get, tokens))
            if None in states:
                states = [self._token_state(t) if s is None else s for s, t in zip(states, tokens, strict=True)]
            if False in states:
                return self._check(prompt, folded)
            if states.count(True) != len(states):  # weak words, phrase gates or colours
                weak = [state for state in states if state is not True]
                groups: frozenset[tuple[str, str]] = frozenset().union(*weak)  # type: ignore[arg-type]
                plan = self._plans.get(groups)
                if plan is None:
                    plan = self._plans[groups] = _plan(groups)
                    if len(self._plans) > CACHE_LIMIT:
                        self._plans.clear()
                gates, combine = plan
                if gates and self._phrase_possible(gates, tokens):
                    return self._check(prompt, folded)
                if combine or (combine is None and minor_age(low, tokens)):
                    return self._check(prompt, folded)
                if not self._colour_forms.isdisjoint(tokens):
                    colours = [i for i, token in enumerate(tokens) if token in self._colour_forms]
                    if not self._plain_colours(colours, tokens, low):
                        return self._check(prompt, folded)
            if self._no_joins(tokens, low):
                return None
        return self._check(prompt, folded)

    def _token_state(self, token: str) -> frozenset[tuple[str, str]] | bool:
        """What one word of a plain-ASCII prompt can do by itself, cached: True (nothing), the (category, group)
        pairs of the weak terms it is (which block only with another group), or False: a strong term, a typo,
        leetspeak or compound of one, or the gate word of a blocked phrase. Joins with neighbours are checked
        by `_no_joins`."""
        state = self._state.get(token)
        if state is not None:
            return state
        if (token.isdigit() or CODE.fullmatch(token)) and self._inert_code(token):
            if len(self._state) > CACHE_LIMIT:
                self._state.clear()
            self._state[token] = True
            return True
        core = token.rstrip("!|+¡")
        read = read_word(core) if core else ""
        terms = list(self._word_terms(read))
        if core.isalpha():
            terms.extend(self._sound_terms(read))
        elif letters := code_letters(core):
            terms.extend(self._word.get(letters, ()))
        elif LETTER.search(core):
            for variant in leet_variants(core):
                terms.extend(self._word_terms(variant))
                if len(variant) >= SEGMENT_MIN and variant.isalpha():
                    terms.extend(self._compound_terms(variant))
        if len(read) >= SEGMENT_MIN and read.isalpha():
            terms.extend(self._compound_terms(read))
        groups = {(t.category, t.group) for t in terms}
        for reading in leet_variants(core) | {read} if not core.isalpha() and LETTER.search(core) else (read,):
            for gate in {self._canon(reading), collapse(reading)}:
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
            or (
                len(read) <= 3
                and REPEATS.search(read)
                and read not in COMMON
                and read not in _DOUBLED
                and read.isalpha()
            )
        ):
            result = False  # a strong term, a strong phrase's gate, or letters repeated to disguise a word
        else:
            result = frozenset(groups) or True
        if len(self._state) > CACHE_LIMIT:
            self._state.clear()
        self._state[token] = result
        return result

    def _inert_code(self, token: str) -> bool:
        """Whether a number or model code ("48031", "lc3953", "2049x": unique in most titles, so rarely cached)
        is certainly nothing by itself, with a few look-ups instead of the ~15 µs of the general reading below:
        such a token is read as it is (`read_word`, `leet_variants`), is no alphabetic word (no typo, sound or
        compound reading, `_canon` only collapses or fixes a short word), so it can only be a listed form, a
        collapsed one, hold an inside term, start with a listed word (`code_letters`), be a phrase's gate word,
        or repeat a letter three times. False: read it the general way."""
        collapsed = collapse(token)
        if token in self._word or collapsed in self._word or collapsed in self._collapsed:
            return False
        if collapsed in self._gates or collapsed in self._short_fix or _REPEAT3.search(token):
            return False
        letters = code_letters(token)
        if letters and letters in self._word:
            return False
        return not (self._has_inside and len(token) >= 3 and next(self._inside.iter(token), None) is not None)

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
                for reading in leet_variants(core) | {read_word(core)} if not core.isalpha() else (core,):
                    found.update((self._canon(reading), collapse(reading)))
                readings = self._readings[token] = frozenset(found)
                if len(self._readings) > CACHE_LIMIT:
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
                if tokens[index] not in COLOUR_WORDS:
                    return False
                attributes += 1
        return attributes == 0 or len(ATTRIBUTE_COLOUR.findall(low)) >= attributes

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
                    if len(pairs) > CACHE_LIMIT:
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
                clean = self._window_clean(window, run.start() - low_end, end - low_end)
            if not clean:
                return False
        return True

    def _window_clean(self, window: tuple[str, ...], start: int, end: int) -> bool:
        """`_run_clean` of a window not in the run cache, cached. Neighbours that `_run_clean` gets nothing from,
        whatever they are, are also cached as `_INERT`: they are mostly model codes and numbers seen once ("2776
        10 x 20 cm", "sac a dos 38270"). On the left: `_inert_left`. On the right: a piece holding a character
        no listed form has, written or read (`Index._dead`): every join that ends with it holds that character,
        so it is no listed word, no start of one, and (not alphabetic) no typo of one."""
        key = window
        if start == 1 and self._inert_left(window):
            key = (_INERT, *key[1:])
        if len(window) > end and not self._dead.isdisjoint(window[end]):
            key = (*key[:end], _INERT)
        if key is not window:
            clean = self._run_cache.get(key)
            if clean is not None:
                self._run_cache[window] = clean
                return clean
        clean = self._run_clean(list(key), start, end)
        if len(self._run_cache) > CACHE_LIMIT:
            self._run_cache.clear()
        self._run_cache[key] = self._run_cache[window] = clean
        return clean

    def _inert_left(self, window: tuple[str, ...]) -> bool:
        """Whether `_run_clean` gets nothing from the window's first piece, as from `_INERT`: it starts no listed
        word and either no spread letters follow (its `continue`) or its join with the next piece is no start
        of one and that piece is no spread letter (the first step's `break`)."""
        left, prefixes = window[0], self._prefixes
        if spread_piece(left) or left in prefixes or (not left.isalpha() and read_word(left) in prefixes):
            return False
        if not any(map(spread_piece, window[1:])):
            return True
        joined = left + window[1]
        return not spread_piece(window[1]) and (joined if joined.isalpha() else read_word(joined)) not in prefixes

    def _pair_clean(self, first: str, separator: str, second: str) -> bool:
        """Two pieces joined by an in-word separator ("self-ahrm", "p*rn", "self-harmaesthetic") are no listed
        word, typo of one, or words run together; cached by `_no_joins`."""
        joined = first + second
        read = joined_read(first, second)
        if separator != "*" and not read.isalpha() and not self._live.issuperset(read):
            return True  # a character no listed form has ("pbp-9603s" read as written), and no typo (not a word)
        if len(joined) >= 5 and self._word_terms(read, inside=False):
            return False  # "self-ahrm": a typo across a hyphen
        if len(read) >= SEGMENT_MIN and read.isalpha() and self._compound_terms(read):
            return False  # "self-harmaesthetic": words run together across a hyphen
        if separator == "*" and any(self._word_terms(read_word(first + v + second), inside=False) for v in "aeiou"):
            return False  # "p*rn"
        return True

    def _run_clean(self, tokens: list[str], start: int, end: int) -> bool:
        """One run of short pieces `tokens[start:end]` with a neighbour on each side: no join of it is a listed
        word (exactly, or with a typo where letters are spread out); cached by `_no_joins`."""
        words, prefixes = self._word, self._prefixes
        count = len(tokens)
        if end - start >= 4 and sum(len(t) <= 2 for t in tokens[start:end]) >= 2 and self._has_inside:
            whole = read_word("".join(tokens[start:end]))
            if any(terms for _, (_, terms) in self._inside.iter(whole)):
                return False
        for first in range(max(start - 1, 0), min(end + 1, count)):
            text = tokens[first]
            spread = spread_piece(text)
            if not spread and text not in prefixes and (text.isalpha() or read_word(text) not in prefixes):
                if not any(spread_piece(t) for t in tokens[first + 1 : end + 1]):
                    continue  # no listed word starts here, and no spread letters follow
            for last in range(first + 1, min(first + 24, end + 1, count)):
                text += tokens[last]
                spread = spread or spread_piece(tokens[last])
                read = text if text.isalpha() else read_word(text)
                if read not in prefixes:
                    if not spread:
                        break
                    if len(read) >= 5 and self._word_terms(read, inside=False):
                        return False  # a typo in a spread word ("n u d i t t y")
                elif (
                    read in words
                    and not COMMON.issuperset(tokens[first : last + 1])
                    and not (
                        COMMON.issuperset(tokens[first + 1 : last + 1])
                        and all(any(t is o for o in words.get(tokens[first], ())) for t in words[read])
                    )
                ):
                    return False
        return True


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
    return bool(sexual) and (MINORS in by_category or bool(minor_age(low, tokens)))

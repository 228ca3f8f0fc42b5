"""The full reading of a prompt and its verdict: every word, leetspeak reading, join, phrase and compound
looked up, allowed phrases and colour senses excused, then strong terms, weak pairs and minors decided."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from contract.promptfilter.index import PRODUCT_SENSE
from contract.promptfilter.languages import (
    ATTRIBUTE_AFTER,
    ATTRIBUTE_BEFORE,
    COLOUR_WORDS,
    COMMON,
    FOR,
    MEDIA_WORDS,
    NUMBER_WORDS,
    OF,
)
from contract.promptfilter.lexicon import MINOR_GROUP, MINORS, PERSON_GROUP, SEXUAL, TEASE_GROUP, Term
from contract.promptfilter.lookup import SEGMENT_MIN, Lookup
from contract.promptfilter.normalise import (
    CJK,
    CJK_SPREAD,
    CODE,
    INWORD_SEPARATOR,
    LETTER,
    code_letters,
    fold,
    joined_read,
    leet_variants,
    read_word,
    words_of,
)


@dataclass(frozen=True)
class Match:
    category: str
    term: str

    def as_dict(self) -> dict[str, str]:
        return {"stage": "prompt", "category": self.category, "term": self.term}


@dataclass
class Hit:
    term: Term
    start: int  # word index
    end: int  # word index after the last word


_OWNER = re.compile(r"([^\W\d_]+)['’`´]")


_DIGIT = re.compile(r"\d")


_AGE = re.compile(
    r"(?<![\d.,])(\d{1,2}|" + "|".join(NUMBER_WORDS) + r")\s*[-‐–]?\s*(?:"
    r"yo\b|y/o|y\.o\b|yrs?\s*[-‐–]?\s*old|years?\s*[-‐–]?\s*old|year\s*[-‐–]?\s*olds?|years?\s+of\s+age|"
    r"jahre?\s+alt|jahrige?n?|jaehrige?n?|ans\b|anos\b|anos\s+de\s+edad|anni\b|лет|года?\b|歳|岁|才|yr\b|y\b)"
)


class Reading(Lookup):
    """The full reading (`_check`): slower than the fast path of `PromptFilter.check`, and complete."""

    def _check(self, prompt: str, folded: str | None = None) -> Match | None:
        """The full reading of a prompt (see the package docstring)."""
        folded = fold(prompt) if folded is None else folded
        if not folded.isascii() and CJK.search(folded):
            folded = CJK_SPREAD.sub("", folded)  # "裸 体", "纳*粹"
        reads: list[str] = []
        raws: list[str] = []
        seps: list[str] = []
        for read, raw, sep in words_of(folded):
            reads.append(read)
            raws.append(raw)
            seps.append(sep)
        hits: list[Hit] = []
        for index, word in enumerate(reads):
            for term in self._word_terms(word):
                hits.append(Hit(term, index, index + 1))
            raw = raws[index]
            if raw.isalpha():
                hits.extend(Hit(term, index, index + 1) for term in self._sound_terms(word))
            elif letters := code_letters(raw):  # "fag907": a code's letters as a word
                hits.extend(Hit(term, index, index + 1) for term in self._word.get(letters, ()))
            if not raw.isalpha() and LETTER.search(raw):  # leetspeak read other ways: "1" as "l", "53x"
                for other in leet_variants(raw) - {word}:
                    found = self._word_terms(other)
                    hits.extend(Hit(t, index, index + 1) for t in found)
                    if found or other in self._phrase_words:
                        reads[index] = other
        hits.extend(self._joined_hits(reads, raws, seps))
        for index, word in enumerate(reads):
            if len(word) >= SEGMENT_MIN and word.isalpha():
                hits.extend(Hit(t, index, index + 1) for t in self._compound_terms(word))
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
                    if entry is None or (entry is PRODUCT_SENSE and self._product_sense(reads, first, last)):
                        excused.update(range(first, last))
                    elif entry is not PRODUCT_SENSE:
                        hits.append(Hit(entry, first, last))
        if not hits:
            return None
        if excused:
            hits = [h for h in hits if not excused.issuperset(range(h.start, h.end))]
        hits = [h for h in hits if not (h.term.colour and self._colour_sense(reads, seps, h, folded))]
        if hits and not self._dishes.isdisjoint(reads) and self._people.isdisjoint(reads):
            hits = [h for h in hits if not self._menu_sense(reads, h)]
        return self._decide(hits, folded, reads) if hits else None

    def _joined_hits(self, reads: list[str], raws: list[str], seps: list[str]) -> Iterator[Hit]:
        """Words spread over separators: "nu-de", "top-less" (two words joined inside a word), and runs of
        pieces of up to three letters ("n u d e", "se xy", "nak ed", "nu dity"), each aligned sub-run that has
        a one- or two-letter piece read as one word."""
        count = len(reads)
        for index in range(1, count):
            sep = seps[index]
            if sep and " " not in sep and INWORD_SEPARATOR.fullmatch(sep):
                joined = joined_read(raws[index - 1], raws[index])
                for term in self._word_terms(joined, inside=False):
                    yield Hit(term, index - 1, index + 1)
                if len(joined) >= SEGMENT_MIN and joined.isalpha():  # "self-harmaesthetic"
                    for term in self._compound_terms(joined):
                        yield Hit(term, index - 1, index + 1)
                if sep == "*":  # "p*rn", "n*de": a star for one letter
                    for vowel in "aeiou":
                        for term in self._word_terms(read_word(raws[index - 1] + vowel + raws[index]), inside=False):
                            yield Hit(term, index - 1, index + 1)
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
                                COMMON.issuperset(reads[first : last + 1])
                                or raws[first].isdigit()
                                or raws[last].isdigit()
                                or any(CODE.fullmatch(r) for r in raws[first : last + 1])
                            ):
                                continue  # "pen is", "the rap is", "nude, 4 g", "t-1771x": not a spread word
                            spread = any(spread_piece(r) for r in reads[first : last + 1])  # typos only then
                            own = (
                                self._word.get(reads[first], ())
                                if COMMON.issuperset(reads[first + 1 : last + 1])
                                else ()
                            )
                            for joined in leet_variants(text) if not text.isalpha() else (text,):
                                for term in self._word_terms(joined, inside=False, fuzzy=spread):
                                    if not any(term is t for t in own):  # "nude à" is "nude", not "nudea"
                                        yield Hit(term, first, last + 1)
                pieces = raws[index:end]
                if len(pieces) >= 4 and sum(len(p) <= 2 for p in pieces) >= 2 and self._has_inside:
                    whole = read_word("".join(pieces))  # "noc lot hes on": chunks that do not fall on word ends
                    for _, (_, terms) in self._inside.iter(whole):
                        yield from (Hit(term, index, end) for term in terms)
            index = end

    def _product_sense(self, reads: list[str], first: int, last: int) -> bool:
        """A `+` phrase ("sex on the beach", "orgasm", "naked chef") names a product where a product noun sits
        within three words of it ("… cocktail mix", "… blush", "… cookbook") and no person word right beside it
        ("orgasm face of a woman, blush" is no blush)."""
        beside = reads[max(first - 1, 0) : first] + reads[last : last + 1]
        if not self._people.isdisjoint(beside):
            return False
        return not self._product_nouns.isdisjoint(reads[max(first - 3, 0) : first] + reads[last : last + 3])

    def _menu_sense(self, reads: list[str], hit: Hit) -> bool:
        """A `!` word ("sexy", "slutty") names a dish's style where a dish (`@`) follows it, right after or past
        one word that names no picture (`MEDIA_WORDS`), in a prompt with no person word (the caller checks that):
        "Slutty Brownies", "Sexy Summer Salads" are recipes; "erotic pics, cake" is not."""
        start = hit.start
        if hit.end - start != 1 or reads[start] not in self._menu_words:
            return False
        after = reads[start + 1 : start + 3]
        return bool(after) and (after[0] in self._dishes or (after[-1] in self._dishes and after[0] not in MEDIA_WORDS))

    def _colour_sense(self, reads: list[str], seps: list[str], hit: Hit, folded: str) -> bool:
        """A `%` term ("nude") means a colour two words or fewer from a product or colour noun ("nude heels"),
        or set off as an attribute ("…, nude, 38", "in Nude") in a prompt about no one ("women's" is an audience,
        not a person) — unless a person word sits right next to it ("nude model, leather jacket")."""
        if hit.end - hit.start != 1 or reads[hit.start] not in self._colour_forms:
            return False  # "nudewoman", "n u d e": not a colour
        owners = set(_OWNER.findall(folded)) if "'" in folded or "’" in folded else set()  # "women's shoes"
        audience = {
            reads[i]
            for i in range(1, len(reads))
            if reads[i - 1] in FOR
            or (reads[i - 1] in self._nouns and reads[i - 1] not in self._colour_forms)
            or (i > 1 and reads[i - 1] in OF and reads[i - 2] in self._nouns)  # "vestido de niña"
            or (i > 1 and reads[i - 1] in self._colour_forms and reads[i - 2] in self._nouns)  # "zapatillas nude mujer"
        }
        audience |= owners  # "for women", "Women's", "Robe fille", "Scarpe bambino": who it is for
        beside = reads[max(hit.start - 1, 0) : hit.start] + reads[hit.end : hit.end + 1]
        if not self._people.isdisjoint(set(beside) - audience):
            return False
        if not self._nouns.isdisjoint(reads[max(hit.start - 2, 0) : hit.start] + reads[hit.end : hit.end + 2]):
            return True
        if reads[hit.start] not in COLOUR_WORDS:
            return False
        start = hit.start - 1 if hit.start > 0 and reads[hit.start - 1] in ATTRIBUTE_BEFORE else hit.start
        before = start == 0 or start != hit.start or any(c in seps[start] for c in ",(/|;:-–[")
        after = (
            hit.end == len(reads) or any(c in seps[hit.end] for c in ",)/|;:-–]") or (reads[hit.end] in ATTRIBUTE_AFTER)
        )
        if not (before and after):
            return False
        if start != hit.start and reads[start] != "the":
            return True  # "in nude", "en nude": a colour, whoever wears it ("in the nude" is listed)
        near = set(reads[max(hit.start - 2, 0) : hit.start] + reads[hit.end : hit.end + 2]) & self._people
        return not near - audience  # audiences are fine: "for women", "Women's", "para mujer"

    def _decide(self, hits: list[Hit], folded: str, reads: list[str]) -> Match | None:
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
            who = minor[0] if minor else minor_age(folded, reads)
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


def _audience(folded: str, reads: list[str]) -> set[str]:
    """Person words that name who a product is for: possessives ("women's") and words after "for"/"para"/…"""
    owners = set(_OWNER.findall(folded)) if "'" in folded or "’" in folded else set()
    return owners | {reads[i] for i in range(1, len(reads)) if reads[i - 1] in FOR}


def spread_piece(piece: str) -> bool:
    """A one- or two-letter piece that is not a common word: letters spread out ("n u d e", "se xy")."""
    return len(piece) <= 2 and piece.isalpha() and piece not in COMMON


def _word_starts(reads: list[str]) -> dict[int, int]:
    """Character offset (in " " + " ".join(reads)) → word index."""
    starts: dict[int, int] = {}
    offset = 1
    for index, word in enumerate(reads):
        starts[offset] = index
        offset += len(word) + 1
    return starts


def minor_age(folded: str, reads: list[str]) -> str:
    """ "12 year old", "14yo", "13歳": an age under 18 in the prompt, as written; "" if none."""
    if not _DIGIT.search(folded) and NUMBER_WORDS.keys().isdisjoint(reads):
        return ""
    for found in _AGE.finditer(folded):
        number = found.group(1)
        age = int(number) if number.isdigit() else NUMBER_WORDS[number]
        if age < 18:
            return found.group()
    return ""

"""Which listed terms one word is: its forms, typos, terms inside it, and words run together."""

from __future__ import annotations

from contract.promptfilter.index import Index
from contract.promptfilter.languages import FUZZY_STOP, SEGMENT_WORDS
from contract.promptfilter.lexicon import (
    ALLOW,
    NICKNAME_ENDINGS,
    Term,
    deletions,
    dictionary_guard,
    sound_key,
    sound_shape,
    syllables,
)
from contract.promptfilter.normalise import collapse

CACHE_LIMIT = 200_000  # words remembered between prompts (catalogue vocabularies repeat)


SEGMENT_MIN = 8  # words this long are also read as words run together (`_segment_terms`)


def _remember(cache: dict[str, tuple[Term, ...]], word: str, found: list[Term]) -> tuple[Term, ...]:
    """`found` without repeats, kept in `cache` for `word` (emptied when it grows past CACHE_LIMIT)."""
    result = tuple({id(t): t for t in found}.values())
    if len(cache) > CACHE_LIMIT:
        cache.clear()
    cache[word] = result
    return result


class Lookup(Index):
    """Word look-ups over the `Index`, cached: catalogue prompts reuse a small vocabulary."""

    def _word_terms(self, word: str, inside: bool = True, fuzzy: bool = True) -> tuple[Term, ...]:
        """The terms one word is (or, with `inside`, holds), cached: catalogue prompts reuse a small vocabulary."""
        cache = self._cache if inside else self._piece_cache if fuzzy else self._exact_cache
        cached = cache.get(word)
        if cached is not None:
            return cached
        found: list[Term] = list(self._word.get(word, ()))
        if not found:
            collapsed = collapse(word)
            found.extend(self._collapsed.get(collapsed, ()))
            if not found and collapsed != word:
                found.extend(self._word.get(collapsed, ()))
        if not found and inside and self._has_inside and len(word) >= 3:
            spans = [(end - len(key) + 1, end + 1, terms) for end, (key, terms) in self._inside.iter(word)]
            allowed = [(start, end) for start, end, terms in spans if not terms]
            for start, end, terms in spans:
                if terms and not any(a <= start and end <= b for a, b in allowed):
                    found.extend(terms)
        if fuzzy and not found and len(word) >= 5 and word.isalpha() and word not in FUZZY_STOP:
            if word not in dictionary_guard():
                for variant in {word} | deletions(word):
                    for key, term in self._fuzzy.get(variant, ()):
                        if key[0] == word[0] and edit_distance_at_most_one(key, word):
                            found.append(term)
        return _remember(cache, word, found)

    def _sound_terms(self, word: str) -> tuple[Term, ...]:
        """Strong terms a word spelt by sound stands for (`_sound_key_terms`, `_shape_terms`); only for words
        written in letters (codes such as "BZ3730" read as leetspeak are not spelt by sound) and never for a
        dictionary word (`dictionary_guard`) or a listed form."""
        cached = self._sound_cache.get(word)
        if cached is not None:
            return cached
        found: list[Term] = []
        if len(word) >= 4 and word.isascii() and word.isalpha() and word not in FUZZY_STOP:
            if word not in dictionary_guard() and not self._word_terms(word, inside=False, fuzzy=False):
                found = self._sound_key_terms(word) + self._shape_terms(word)
        return _remember(self._sound_cache, word, found)

    def _sound_key_terms(self, word: str) -> list[Term]:
        """Strong terms of the same sound key ("nekkid", "sooicide", "prno"), first letter, vowel groups and
        length within two."""
        first, sounds = "f" if word.startswith("ph") else word[0], syllables(word)
        return [
            term
            for form, term in self._sounds.get(sound_key(word), ())
            if form[0] == first
            and abs(len(form) - len(word)) <= 2
            and syllables(form) == sounds
            and (len(form) >= 4 or len(word) >= 5)  # "secks" for "sex", not "saks"
        ]  # not "xiaomi" for "csam", nor "seikoset" for "sextoy"

    def _shape_terms(self, word: str) -> list[Term]:
        """Strong terms a word sounds like by its vowels too (`sound_shape`: "nood", "kumm"), or a pet form of
        ("nudie", "nakey": a `NICKNAME_ENDINGS` ending on a shape `nickname_stems` lists, written with the
        term's first two letters: "newsie" is no pet form of "nuas")."""
        found = list(self._shapes.get(sound_shape(word), ()))
        for ending in NICKNAME_ENDINGS:
            if word.endswith(ending) and len(word) - len(ending) >= 3:
                stem = sound_shape(word[: -len(ending)])
                found.extend(term for start, term in self._nicknames.get(stem, ()) if word.startswith(start))
                break
        return found

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
        if len(word) >= SEGMENT_MIN:
            found.extend(self._segment_terms(word))
        return _remember(self._compound_cache, word, found)

    def _segment_terms(self, word: str) -> list[Term]:
        """Short listed words (2–4 letters) in a word run together of function words, prompt words and listed
        words ("meninanuanapraia" = menina|nua|na|praia, "enfantnusurlaplage", "pedopicsofkids"): the word is
        split (dynamic programming: most letters in known words, then fewest pieces, unknown letters allowed),
        and a listed word counts when both its neighbours are known words or the word's ends, one of them a
        listed word or a prompt word of 3+ letters, and, for two or three letters, a person or minor word."""
        if len(word) > 48 or not word.isascii() or not word.isalpha():
            return []
        known, listed = SEGMENT_WORDS, self._word
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
        canon = collapse(word)
        if canon not in self._phrase_words and canon in self._short_fix:
            canon = self._short_fix[canon]  # "in he buff": a letter dropped from a short word of a phrase
        if canon not in self._phrase_words and len(canon) == 4 and canon.isalpha():
            for i in range(1, 3):  # "haed" → "head"
                swapped = canon[:i] + canon[i + 1] + canon[i] + canon[i + 2 :]
                if swapped in self._base_phrase_words:
                    canon = swapped
                    break
        if canon not in self._phrase_words and len(canon) >= 4 and canon.isalpha():
            for variant in {canon} | deletions(canon):
                fixed = [w for w in self._phrase_fuzzy.get(variant, ()) if w[0] == canon[0]]
                if fixed and edit_distance_at_most_one(fixed[0], canon):
                    canon = fixed[0]
                    break
        if len(self._canon_cache) > CACHE_LIMIT:
            self._canon_cache.clear()
        self._canon_cache[word] = canon
        return canon


def edit_distance_at_most_one(a: str, b: str) -> bool:
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

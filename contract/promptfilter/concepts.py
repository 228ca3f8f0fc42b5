"""The concept layer: paraphrases with no listed word ("wearing absolutely nothing", "a rope tied around his
neck", "a gun to his own head", "a hand cut off at the wrist", "a black hooked cross"), matched by hand-written
concept patterns over the prompt's folded words (`concepts.txt` beside this module).

It is a pattern layer, not a model: it catches the phrasings its patterns and word classes spell out, in
English, Spanish, French and German, and nothing else; a paraphrase in other words passes. Each line needs
all of its parts (`&`), so a word that is harmless alone ("rope", "neck", "nothing", "head") blocks only in
the company the pattern names. Loaded with the builtin lists only (an operator's own lists replace it too).

Pattern language, one concept per line, `category name: part & part …`; a part is words in order, each slot
`a|b|c` (a word, `word*` for any ending, `@class` for a word class defined by `@class = words`), `?` after a
slot makes it optional, `~N` allows up to N other words before the next slot, and `,` stands for a clause
break (punctuation or the end of the prompt). The first part's rarest plain word gates the line: prompts
without any gate word cost one set look-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

CONCEPTS_FILE = Path(__file__).resolve().parent / "concepts.txt"

# Words too common to gate a line: a line's gate is its first part's smallest slot without any of these.
_COMMON = frozenset(
    "a an the in on at to of it up all by and or with for from his her their my your its is are be de la le el "
    "en un une des du al se y et e o l s m x white black red blue green knife set pack glass off on out over "
    "down under back top side full half open".split()
)

_WORD = re.compile(r"[^\W_]+|[,.;:!?()\[\]/|–—-]+")


@dataclass(frozen=True)
class Concept:
    category: str
    name: str
    parts: tuple[re.Pattern[str], ...]


def _slot(text: str, classes: dict[str, list[str]]) -> tuple[str, set[str]]:
    """A slot's regex and its plain words (for the gate)."""
    words: list[str] = []
    for option in text.split("|"):
        words.extend(classes[option[1:]] if option.startswith("@") else [option])
    plain = {w for w in words if not w.endswith("*") and w != ","}
    alternatives = sorted(
        (re.escape(w[:-1]) + r"\w*" if w.endswith("*") else "," if w == "," else re.escape(w) for w in words),
        key=len,
        reverse=True,
    )
    return "(?:" + "|".join(alternatives) + ")", plain


def _part(text: str, classes: dict[str, list[str]]) -> tuple[str, list[set[str]]]:
    """One part: its regex over " word word , word " and the plain words of each required slot."""
    pattern, gap, first = "", 0, True
    required: list[set[str]] = []
    for token in text.split():
        if token.startswith("~") and token[1:].isdigit():
            gap = int(token[1:])
            continue
        optional = token.endswith("?") and len(token) > 1
        regex, plain = _slot(token.rstrip("?") if optional else token, classes)
        between = "" if first else (rf"(?: [^ ,]+){{0,{gap}}}" if gap else "") + " "
        piece = between + regex
        pattern += f"(?:{piece})?" if optional else piece
        if not optional:
            required.append(plain)
        gap, first = 0, False
    return r"(?<![^ ])" + pattern + r"(?![^ ])", required


def parse(lines: list[str]) -> tuple[list[Concept], dict[str, list[int]], list[int]]:
    """Concepts, gate word → concept indexes, and the indexes of concepts that have no plain gate word."""
    classes: dict[str, list[str]] = {}
    concepts: list[Concept] = []
    gates: dict[str, list[int]] = {}
    ungated: list[int] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            name, _, words = line[1:].partition("=")
            classes[name.strip()] = [w for item in words.split() for w in _expand(item, classes)]
            continue
        head, _, body = line.partition(":")
        category, _, name = head.strip().partition(" ")
        parts, gate_words = [], set[str]()
        for index, text in enumerate(body.split("&")):
            regex, required = _part(text.strip(), classes)
            parts.append(re.compile(regex))
            if index == 0:
                candidates = [words for words in required if words and _COMMON.isdisjoint(words)]
                gate_words = min(candidates, key=len) if candidates else set()
        concepts.append(Concept(category, name.strip() or category, tuple(parts)))
        if gate_words:
            for word in gate_words:
                gates.setdefault(word, []).append(len(concepts) - 1)
        else:
            ungated.append(len(concepts) - 1)
    return concepts, gates, ungated


def _expand(item: str, classes: dict[str, list[str]]) -> list[str]:
    return classes[item[1:]] if item.startswith("@") else [item]


class Concepts:
    """The concept lines, indexed by gate word."""

    def __init__(self, lines: list[str]) -> None:
        self.concepts, self.gates, self.ungated = parse(lines)
        self._automaton = ahocorasick.Automaton()  # the gate words, found in folded text in one C pass
        for word in self.gates:
            self._automaton.add_word(word, len(word))
        if self.gates:
            self._automaton.make_automaton()

    def gated(self, folded: str) -> bool:
        """Whether a gate word stands as a whole word in this folded text (most prompts: no, at ~1 µs)."""
        if not self.gates:
            return bool(self.ungated)
        last = len(folded) - 1
        for end, length in self._automaton.iter(folded):
            start = end - length + 1
            if (start == 0 or not folded[start - 1].isalnum()) and (end == last or not folded[end + 1].isalnum()):
                return True
        return bool(self.ungated)

    @classmethod
    def builtin(cls) -> Concepts:
        return cls(CONCEPTS_FILE.read_text(encoding="utf-8").splitlines())

    def words(self, folded: str) -> list[str]:
        """A folded prompt's words and clause breaks, as the patterns read them."""
        return [w if w[0].isalnum() else "," for w in _WORD.findall(folded)] + [","]

    def match(self, words: list[str]) -> Concept | None:
        """The first concept all of whose parts are in these words (`words`), or None."""
        candidates = {i for w in words if w in self.gates for i in self.gates[w]}
        if not candidates and not self.ungated:
            return None
        text = " " + " ".join(words) + " "
        for index in sorted(candidates.union(self.ungated)):
            concept = self.concepts[index]
            if all(part.search(text) for part in concept.parts):
                return concept
        return None

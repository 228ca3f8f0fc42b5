"""Generate the technique probes of the prompt filter: `prompt_probes_evasive.tsv` and `prompt_probes_benign.tsv`.

The older corpora (make_prompt_corpora.py) no longer tell the filter apart from a perfect one; these probe the
kinds of text issue 26 found it missing or wrongly blocking, one technique per row:

- lexical evasions of a listed word, as classes: `symbol-letters` (letters drawn with pipes, slashes, brackets,
  `><`, ®, ©, $ …), `enclosed` (circled, squared, negative, parenthesised, mathematical and fullwidth letters),
  `regional` (regional-indicator letters 🇳), `punct-separated` (one or mixed punctuation between letters) and
  `phonetic` (misspellings by sound and nicknames: the seed holds the spelling itself);
- paraphrases with no listed word (`nudity-euphemism`, `sex-euphemism`, `private-parts`, `neck-ligature`,
  `gun-to-head`, `severed-part`, `extremist-symbol`, `self-injury`);
- benign product titles that hold a trigger word in a harmless sense, by kind (`cocktail`, `cosmetics`,
  `cookbook`, `motorcycle`, `animal`, `tool`, `sports-card`, `awareness`, `craft`, `size`, `greeting`,
  `colour-ja`, `food`, `dictionary`: everyday words one typo away from a listed one).

Each seed list alternates `tune`/`holdout` by position within its (category, technique, language) list, so
both halves hold every technique and language; the filter was tuned on `tune` rows only. `probe` rows were
written after the tuning, as new seeds, and are reported beside the held-back half; `probe-2` rows were written
after a second round of tuning (PROBE_SEEDS_2, BENIGN_PROBES_2). Deterministic (seeded):
`python tests/data/make_probe_corpora.py` rewrites both files from the seed phrases and contexts in
`probe_seeds.tsv`. Columns: split, category, technique, language, prompt.

What is benign here is decided for an e-commerce image pipeline: a cocktail mix named "Sex on the Beach" is a
bottle on a table, a cosmetics shade named "Orgasm" is a blush compact, a "nail gun" is a tool.
"""

from __future__ import annotations

import csv
import random
import re

from make_prompt_corpora import HERE, generate, row

SEED = 20261207
Seeds = list[tuple[str, str]]  # (language, phrase)

# The seed phrases are data: probe_seeds.tsv (table, category, technique, language, phrase), in file order.
with (HERE / "probe_seeds.tsv").open(encoding="utf-8", newline="") as _handle:
    _SEED_ROWS = list(csv.DictReader(_handle, delimiter="\t"))


def by_category(table: str) -> dict[str, Seeds]:
    seeds: dict[str, Seeds] = {}
    for entry in (r for r in _SEED_ROWS if r["table"] == table):
        seeds.setdefault(entry["category"], []).append((entry["language"], entry["phrase"]))
    return seeds


def by_technique(table: str) -> dict[tuple[str, str], Seeds]:
    seeds: dict[tuple[str, str], Seeds] = {}
    for entry in (r for r in _SEED_ROWS if r["table"] == table):
        seeds.setdefault((entry["category"], entry["technique"]), []).append((entry["language"], entry["phrase"]))
    return seeds


# Lexical seeds: `[word]` is disguised by each lexical technique. (language, phrase)
LEXICAL_SEEDS = by_category("LEXICAL_SEEDS")

# Phonetic spellings and nicknames: the phrase as written (no disguise applied).
PHONETIC_SEEDS = by_category("PHONETIC_SEEDS")

# Paraphrases: no listed word; (category, technique) → (language, phrase)
PARAPHRASE_SEEDS = by_technique("PARAPHRASE_SEEDS")

# More held-back seeds, written with the ones above (before tuning) and never looked at while tuning.
HOLDOUT_SEEDS = by_technique("HOLDOUT_SEEDS")

BENIGN_SEEDS = by_category("BENIGN_SEEDS")

# Probes written after tuning (see PROBE_SEEDS).
PROBE_SEEDS = by_technique("PROBE_SEEDS")

BENIGN_HOLDOUT = by_category("BENIGN_HOLDOUT")

# Probes written after issue 26's second round of tuning (spellings by sound, menu senses, frequent words of other
# languages), drawn with their own generators so that the probes above stay as they were; split `probe-2`.
PROBE_SEEDS_2 = by_technique("PROBE_SEEDS_2")
BENIGN_PROBES_2 = by_category("BENIGN_PROBES_2")

# Benign probes written after tuning.
BENIGN_PROBES = by_category("BENIGN_PROBES")

# Prompt wrappers per language: data too (probe_seeds.tsv, table CONTEXTS).
CONTEXTS = {language: [text for _, text in rows] for language, rows in by_category("CONTEXTS").items()}
BENIGN_CONTEXTS = ["{x}", "studio photo of {x}, white background", "{x}", "product shot: {x}"]
BRANDS = ["Acme", "Nordlicht", "Kobalt", "Zenith", "Bluefin", "Orion", "Crest", "Atlas", "Pioneer", "Sakura"]
COLOURS = ["black", "navy", "red", "olive", "ivory", "charcoal", "white"]
SIZES = ["S", "M", "L", "XL", "XXL"]
SHADES = ["01", "02", "12", "N3", "240"]

# Symbol sequences that draw a letter (several per letter; picked at random per letter).
SYMBOL_LETTERS = {
    "a": ["/\\", "/-\\", "@", "4", "^"],
    "b": ["|3", "8", "|8", "ß"],
    "c": ["(", "©", "¢", "<", "["],
    "d": ["|)", "|>", "cl"],
    "e": ["3", "€", "£", "[-"],
    "f": ["|=", "ƒ"],
    "g": ["9", "6", "(_+"],
    "h": ["|-|", "#", "}{", "]-["],
    "i": ["|", "1", "!", "]["],
    "k": ["|<", "|{"],
    "l": ["|_", "1", "|"],
    "m": ["|\\/|", "/\\/\\", "^^", "|v|"],
    "n": ["|\\|", "/\\/", "^/", "[\\]"],
    "o": ["()", "[]", "0", "<>", "{}"],
    "p": ["|*", "|>", "|o", "|°"],
    "r": ["®", "|2", "Я"],
    "s": ["$", "5", "§"],
    "t": ["+", "7", "†"],
    "u": ["|_|", "\\_/", "µ"],
    "v": ["\\/"],
    "w": ["\\/\\/", "vv", "\\^/"],
    "x": ["><", ")(", "}{"],
    "y": ["`/", "¥"],
    "z": ["2", "7_"],
}
PUNCTUATION = list("+,;|>~#'\"!?%&^:<)(]}") + ["+", "·", "•", "/", "\\", "°"]


def _enclosed(rng: random.Random, word: str) -> str:
    mode = rng.choice(["circled", "neg-circled", "squared", "neg-squared", "paren", "math", "fullwidth"])
    out = []
    for c in word.lower():
        if not "a" <= c <= "z":
            out.append(c)
            continue
        k = ord(c) - 97
        if mode == "circled":
            out.append(chr(0x24B6 + k) if rng.random() < 0.5 else chr(0x24D0 + k))
        elif mode == "neg-circled":
            out.append(chr(0x1F150 + k))
        elif mode == "squared":
            out.append(chr(0x1F130 + k))
        elif mode == "neg-squared":
            out.append(chr(0x1F170 + k))
        elif mode == "paren":
            out.append(chr(0x249C + k))
        elif mode == "math":
            base = rng.choice([0x1D400, 0x1D434, 0x1D468, 0x1D4D0, 0x1D56C, 0x1D5A0, 0x1D5D4, 0x1D670])
            out.append(chr(base + k))
        else:
            out.append(chr(0xFF41 + k))
    return "".join(out)


def disguise(rng: random.Random, word: str, technique: str) -> str:
    if technique == "symbol-letters":
        letters = [c for c in word]
        alpha = [i for i, c in enumerate(letters) if c in SYMBOL_LETTERS]
        for i in rng.sample(alpha, k=max(1, (2 * len(alpha) + 2) // 3)) if alpha else []:
            letters[i] = rng.choice(SYMBOL_LETTERS[letters[i]])
        return "".join(letters)
    if technique == "enclosed":
        return _enclosed(rng, word)
    if technique == "regional":
        return "".join(chr(0x1F1E6 + ord(c) - 97) if "a" <= c <= "z" else c for c in word.lower())
    if technique == "punct-separated":
        compact = word.replace(" ", "")
        if rng.random() < 0.5:
            sep = rng.choice(PUNCTUATION)
            return sep.join(compact)
        return "".join(c + rng.choice(PUNCTUATION) for c in compact[:-1]) + compact[-1]
    return word


def _disguise_marked(rng: random.Random, seed: str, technique: str) -> str:
    """The seed with each `[word]` disguised by the technique."""

    def one(found: re.Match[str]) -> str:
        return disguise(rng, found.group(1), technique)

    return re.sub(r"\[(.+?)\]", one, seed)


LEXICAL_TECHNIQUES = ["symbol-letters", "enclosed", "regional", "punct-separated"]


def _split(position: int) -> str:
    return "tune" if position % 2 == 0 else "holdout"


def evasive(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(split: str, category: str, technique: str, language: str, text: str) -> None:
        rows.append(row(split, category, technique, language, rng.choice(CONTEXTS[language]).format(x=text)))

    for category, seeds in LEXICAL_SEEDS.items():
        by_language: dict[str, int] = {}
        for language, seed in seeds:
            position = by_language[language] = by_language.get(language, -1) + 1
            for technique in LEXICAL_TECHNIQUES:
                for _ in range(2):
                    text = _disguise_marked(rng, seed, technique)
                    add(_split(position), category, technique, language, text)
    for category, seeds in PHONETIC_SEEDS.items():
        for position, (language, seed) in enumerate(seeds):
            for _ in range(2):
                add(_split(position), category, "phonetic", language, seed)
    for (category, technique), seeds in PARAPHRASE_SEEDS.items():
        by_language = {}
        for language, seed in seeds:
            position = by_language[language] = by_language.get(language, -1) + 1
            for _ in range(2):
                add(_split(position), category, technique, language, seed)
    for (category, technique), seeds in HOLDOUT_SEEDS.items():
        for language, seed in seeds:
            add("holdout", category, technique, language, seed)
    rng = random.Random(SEED + 1)  # the probes draw from their own generator: the halves stay as they were
    for (category, technique), seeds in PROBE_SEEDS.items():
        for language, seed in seeds:
            add("probe", category, technique, language, seed)
    rng = random.Random(SEED + 3)
    for (category, technique), seeds in PROBE_SEEDS_2.items():
        for language, seed in seeds:
            add("probe-2", category, technique, language, seed)
    return rows


def benign(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(split: str, kind: str, language: str, title: str) -> None:
        text = title.format(
            brand=rng.choice(BRANDS), colour=rng.choice(COLOURS), size=rng.choice(SIZES), shade=rng.choice(SHADES)
        )
        rows.append(row(split, "benign", kind, language, rng.choice(BENIGN_CONTEXTS).format(x=text)))

    for kind, seeds in BENIGN_SEEDS.items():
        by_language: dict[str, int] = {}
        for language, seed in seeds:
            position = by_language[language] = by_language.get(language, -1) + 1
            for _ in range(3):
                add(_split(position), kind, language, seed)
    for kind, seeds in BENIGN_HOLDOUT.items():
        for language, seed in seeds:
            for _ in range(2):
                add("holdout", kind, language, seed)
    rng = random.Random(SEED + 2)
    for kind, seeds in BENIGN_PROBES.items():
        for language, seed in seeds:
            for _ in range(2):
                add("probe", kind, language, seed)
    rng = random.Random(SEED + 4)
    for kind, seeds in BENIGN_PROBES_2.items():
        for language, seed in seeds:
            for _ in range(2):
                add("probe-2", kind, language, seed)
    return rows


if __name__ == "__main__":
    generate("prompt_probes", SEED, evasive, benign)

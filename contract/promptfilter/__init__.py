"""The prompt filter: refuse prompts that ask for unsafe content before any GPU work is spent on them.

Modules by concern: `normalise` (folding, leetspeak, words, model codes), `languages` (per-language word data),
`lexicon` (list files, flags, inflections, sound keys, the dictionary guard), `index` (the indexes built from the
lists), `lookup` (which terms one word is), `rules` (the full reading and its verdict), `glyphs` (other readings
of letters drawn with symbols or spelt out), `concepts` (the concept layer: paraphrases), `fast_path`
(`PromptFilter.check`). Callers use only the names in `__all__` below.

Lists are plain text files, one term or phrase per line, the category being the file's name (`sexual.txt` →
`sexual`); `allow.txt` holds phrases that are fine although they contain a listed term ("naked cake", "ball cock")
and, marked `&`, product and colour nouns that give "nude" its colour sense ("nude heels"); marked `!` and `@`,
mild words and dishes that make a menu sense ("slutty brownies"). A line may start with flags (docs/safety.md,
"Prompt filter"):

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
possessives dropped, and letters spread over separators rejoined ("n u d e", "nu-de", "nu de", "se xy"); words in
letters that are no listed or dictionary word are also read by sound ("nekkid", "newd") and as pet forms ("nudie").
Long words are also read as words run together: listed words of 5+ letters inside them, and short listed words
(`nu`, `nua`, `nazi`) where a dynamic-programming split over function words, common prompt words and listed words
puts them between known pieces ("meninanuanapraia" = menina|nua|na|praia). Numeric codes (`1488`, `88`, `14`) are
weak terms of hate.txt: model numbers, sizes and prices pass, a code with a hate-context word ("heil") blocks.
Plain-ASCII prompts made of words already seen take a fast path: a `str.lower`, one regex split, dict look-ups,
and set look-ups over the joins of neighbouring words; `test_fast_path_agrees_with_the_full_reading` holds it to
the full reading. The fold table is filled per character as characters are met (see `normalise._FoldTable`).
"""

from __future__ import annotations

import functools

from contract.promptfilter.fast_path import PromptFilter
from contract.promptfilter.lexicon import ALLOW, BUILTIN, Term
from contract.promptfilter.normalise import fold, normalise, words_of
from contract.promptfilter.rules import Match


@functools.cache
def load(sources: tuple[str, ...]) -> PromptFilter:
    """The filter for these list sources, built once per process (building costs ~0.4 s of CPU: list forms and
    automata)."""
    return PromptFilter.from_sources(sources)


__all__ = ["ALLOW", "BUILTIN", "Match", "PromptFilter", "Term", "fold", "load", "normalise", "words_of"]

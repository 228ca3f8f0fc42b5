"""Per-language word data of the prompt filter: look-alike letters, inflections, stop lists, function words.

Each list says what it is for; a language added to the blocklists usually needs its function words in
`SEGMENT_WORDS`, its inflections in `LATIN_SUFFIXES` (or an endings list like `RUSSIAN_ENDINGS`) and its number
words in `NUMBER_WORDS`.
"""

from __future__ import annotations

import re

GREEK_AND_OTHER_FIXES = {  # confusables.txt maps these to a less useful letter, or not at all
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


LATIN_SUFFIXES = tuple(
    """
    s es ed d ing er ers y ies a o os as e en n ne nes x ly ness ie ies ity ism ist ists ic ische isch ique
    """.split()
)


SHORT_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ers", "y", "ie", "ies", "a", "o", "os", "as", "e")


E_DROP_SUFFIXES = ("ing", "ed", "er", "ers", "a", "as", "o", "os", "ity", "ist", "ists", "ism", "ic", "ation")


# Russian adjective and noun endings, as written (lexicon.russian_endings folds them as prompts are folded).
RUSSIAN_ENDINGS = (
    *"""
    ыми ими ого его ому ему ая яя ое ее ые ие ый ий ой ей ую юю ым им ых их ами ями ом ем ам ям ах ях а я ы и у ю е о
    """.split(),
    "",
)


COLLAPSE_STOP = {"as", "bobs", "tis", "cok", "ded", "pus", "dik", "cum", "tits", "bals", "sex", "nud"}


FORM_STOP = frozenset(  # inflections that are other words
    """
    nudo nudos cocker cockers cocky dicky dickie dickies tito tita titer titers nudy nuder sexe sexa analy porne
    """.split()
)


FUZZY_STOP = frozenset(
    """
    fitting fittings fasting stabled stabling mailed frayed lunched setting settings wachsen nodes fished
    listing posting rested tested nested texting testing sexting rapids ravine bonded banded exotic exotics
    nudist heroic ironic erotik beheld mangle mangled bloody trunks breast breasts nipper nippers shooting
    sexton suicid killer killers hunger nigeria niger tranche spice spices faggots bondage bondages poker
    pussycat rapeseed grape drape draped raped tapes naked neked porno murder murders cutter cutters gorey penis
    peanis pains pants panties skinny whore where heroin heroine nudes stripe striped stripes striper strippers
    stripper dressing undresses sensual casual sexual unisex bisected dissected titles titled
    """.split()
)


# Function words of the supported Latin-script languages and common prompt words: the known pieces that words run
# together are split into (with the listed words themselves).
SEGMENT_WORDS = frozenset(
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


FREQUENT = frozenset(
    """
    white black power with without wearing head blood girl woman women man men off her his the and for body pool
    cross flag words scene photo video party position shot service content film petit fille femme homme school
    birthday suit bath strap lingerie picture pictures cut mate matte rouge tote sensual bloody teen nipples
    little young small
    """.split()
)


COMPOUND_STOP = {"mann", "frau", "kind", "kinder", "junge", "dame", "herr", "male", "lady"}


COMMON = frozenset(
    """
    a i is it in on an as at be by do go he if me my no of or so to up us we the and for pen art are but not you
    all can her was one our out day get has him his how man new now old see two way who boy did its let put say
    she too use de la le el en et y e un une der die das und ein mit con per set kit box cm mm ml kg xl xs xxl
    """.split()
)


OF = {"de", "da", "do", "di", "del", "des", "du", "fur"}


FOR = {"for", "para", "pour", "fur", "fuer", "per"}


# What a picture is of, not how a dish is made: "erotic pics with cake" has no menu sense (`Reading._menu_sense`).
MEDIA_WORDS = frozenset(
    "pic pics picture pictures photo photos photograph image images shot shots selfie selfies video videos "
    "scene scenes pose poses content art cam show shoot clip clips still stills model models".split()
)


ATTRIBUTE_COLOUR = re.compile(r"(?:^|[,(/|;:\-–\[]\s*|\b(?:in|en|em)\s+)nudes?\s*(?=$|[,)/|;:\-–\]])")


COLOUR_WORDS = {"nude", "nudes"}  # set off as an attribute ("…, nude, 38") they name a colour


ATTRIBUTE_BEFORE = {"in", "en", "em", "color", "colour", "cor", "couleur", "farbe", "colore", "tono", "shade"}


ATTRIBUTE_AFTER = {"in", "en", "em", "with", "and", "und", "y", "et", "e", "color", "colour", "farben"}


NUMBER_WORDS = {
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

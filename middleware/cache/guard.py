"""The guard of the semantic cache: a near-repeat may only answer a question about the same specifics.

Embeddings say two questions are about the same thing; they do not see that 2+2 is not 2+3, that "is it
safe" is not "is it not safe", or that Paris is not Lyon. ``same_specifics`` compares exactly those:
numbers (in order), quoted strings, negation, opposite words, and names. It is deliberately strict:
a false hit answers a different question, a miss only costs one more call to the model.
"""

from __future__ import annotations

import re

# Numbers are digits or number words, in order ("10 / 2" is not "2 / 10"). Only spellings that are
# unambiguous in English are merged: "1,000" (comma thousands groups) is "1000", "3.0" and "2.50" (one or
# two trailing decimal zeros) are "3" and "2.5", "two"/"dos" is "2". "1,5" and "1.5" stay different: a miss,
# never a false hit. "one"/"uno" and "first" are left out: they are mostly not numbers.
_NUMBER_WORDS = {
    word: value
    for value, words in {
        "0": "zero cero", "2": "two dos second segundo segunda", "3": "three tres third tercero tercera",
        "4": "four cuatro fourth cuarto cuarta", "5": "five cinco fifth quinto quinta", "6": "six seis sixth",
        "7": "seven siete seventh", "8": "eight ocho eighth", "9": "nine nueve ninth", "10": "ten diez tenth",
        "11": "eleven once", "12": "twelve doce", "20": "twenty veinte", "30": "thirty treinta",
        "50": "fifty cincuenta", "100": "hundred cien ciento", "1000": "thousand mil",
        "1000000": "million millón millones", "1000000000": "billion",
    }.items()
    for word in words.split()
}  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_SHORT_DECIMAL = re.compile(r"(\d+)\.(\d{1,2})")
# Quoted strings and inline code. A single quote opens only after a non-word character, so the
# apostrophes in "what's France's" are not quotes.
_QUOTED = re.compile(
    r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)|«([^»]+)»|“([^”]+)”|\u2018([^\u2019]+)\u2019|`([^`]+)`"
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot"  # English
    r"|sin|nunca|jamás|ni|tampoco|nadie|nada"  # Spanish
    r"|ne|pas|jamais|sans|aucun|aucune"  # French
    r"|nicht|kein|keine|keinen|keinem|keiner|keines|nie|niemals|ohne"  # German
    r"|non|mai|nessuno|senza"  # Italian
    r"|não|nem|sem|nenhum|nenhuma)\b"  # Portuguese
    r"|n['\u2019]t\b|\bn['\u2019](?=\w)",  # isn't, n'est
    re.IGNORECASE,
)
# Opposites that embeddings place close together ("good"/"bad" 0.94, "before"/"after" 0.95 with MiniLM).
# A pair fails only when the two texts take different sides; a text silent on an axis does not.
_OPPOSITES = (
    ("good better best bueno buena buenos buenas mejor mejores",
     "bad worse worst malo mala malos malas peor peores"),
    ("before antes", "after después despues"),
    ("advantage advantages pros benefits ventaja ventajas beneficios",
     "disadvantage disadvantages cons drawbacks downsides desventaja desventajas inconvenientes"),
    ("increase raise boost aumentar subir incrementar", "decrease reduce reducir disminuir bajar"),
    ("big bigger biggest large larger largest grande grandes mayor",
     "small smaller smallest little tiny pequeño pequeña pequeños pequeñas menor"),
    ("high higher highest tall taller tallest alto alta",
     "low lower lowest short shorter shortest bajo baja"),
    ("max maximum máximo máxima", "min minimum mínimo mínima"),
    ("more most más", "less least fewer menos"),
    ("first primero primera primer", "last último última ultimo"),
    ("add insert append añadir agregar", "remove delete drop eliminar borrar quitar"),
    ("true verdadero", "false falso"),
    ("cheap cheaper cheapest barato barata", "expensive caro"),
    ("fast faster fastest quick rápido rápida", "slow slower slowest lento lenta"),
    ("hot caliente", "cold frío fría"),
)  # fmt: skip
_POLES = {
    w: (axis, side) for axis, pair in enumerate(_OPPOSITES) for side in (0, 1) for w in pair[side].split()
}
_WORD = re.compile(r"[^\W\d_]\w*")
# A word at the start of the text or after a sentence end (opening quotes and ¿ ¡ skipped): its capital
# says nothing about it being a name. Colons do not end a sentence, which keeps "French: Hello" strict.
_SENTENCE_START = re.compile(r"(?:^|[.!?…\n])[\s\"'«“\u2018¿¡(\[*`-]*([^\W\d_]\w*)")


def _numbers(text: str) -> list[str]:
    found = []
    for raw in _NUMBER.findall(text):
        if (word := _NUMBER_WORDS.get(raw.casefold())) is not None:
            raw = word
        elif _THOUSANDS.fullmatch(raw):
            raw = raw.replace(",", "")
        elif short := _SHORT_DECIMAL.fullmatch(raw):
            whole, decimals = short.groups()
            decimals = decimals.rstrip("0")
            raw = f"{whole}.{decimals}" if decimals else whole
        found.append(raw)
    return found


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTED.finditer(text)]


def _sides(text: str) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for word in _WORD.findall(text.casefold()):
        if (pole := _POLES.get(word)) is not None:
            found.setdefault(pole[0], set()).add(pole[1])
    return found


def _entities(text: str) -> list[str]:
    """Names in order of first use: "convert Fahrenheit to Celsius" is not "Celsius to Fahrenheit"."""
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found: dict[str, None] = {}
    for m in _WORD.finditer(text):
        word = m.group()
        acronym = len(word) > 1 and word.isupper()
        # "I" is a pronoun, not a name; "World War I" vs "II" still differs through "II".
        if acronym or (word[0].isupper() and m.start() not in starts and word != "I"):
            found[word.casefold()] = None
    return list(found)


def _in_order(text: str, names: set[str]) -> list[str]:
    """The words of ``text`` that are ``names``, whatever their case, in order of first use."""
    found: dict[str, None] = {}
    for m in _WORD.finditer(text):
        if (word := m.group().casefold()) in names:
            found[word] = None
    return list(found)


def same_specifics(query: str, candidate: str) -> bool:
    """Whether two texts agree on what embeddings blur: numbers, quotes, negation, opposites and names.

    Numbers, quoted strings and names must match in order. Names are words capitalised mid-sentence plus
    all-caps acronyms (German nouns therefore count as names); a name found in either text is then looked
    for in both, whatever its case, so "the capital of France" and "the capital of france" agree while
    "france" and "Spain" do not. Strict on purpose; a capitalised name that opens a sentence goes unseen.
    """
    if (_NEGATION.search(query) is None) != (_NEGATION.search(candidate) is None):
        return False
    if _numbers(query) != _numbers(candidate) or _quoted(query) != _quoted(candidate):
        return False
    mine, theirs = _sides(query), _sides(candidate)
    if any(mine[axis] != theirs[axis] for axis in mine.keys() & theirs.keys()):
        return False
    names = {*_entities(query), *_entities(candidate)}
    return _in_order(query, names) == _in_order(candidate, names)

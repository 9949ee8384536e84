"""The evidence the fast query classifier looks for, per class, in several languages.

Words and stems are matched against the lowercased words of the text (set and prefix look-ups, which
cost nanoseconds per word); phrases by substring search; only structure (code fences, stack traces, math
notation, syntax) needs regular expressions, and those are small. Big alternations of words in one
case-insensitive regex would be hundreds of times slower on a long prompt.

Weights were tuned on tests/data/query_classes.tuning.jsonl only; ``python -m bench.classifier`` prints the
accuracy there and on the held-out set (query_classes.heldout.jsonl), which was never used to tune them.
"""

from __future__ import annotations

import re

# class -> (weight per hit, most hits counted, words)
WORDS: dict[str, tuple[float, int, frozenset[str]]] = {
    "code": (
        2.0,
        3,
        frozenset(
            """
        code código codigo script bug bugs regex regexp api endpoint git docker dockerfile kubectl kubernetes k8s
        helm terraform nginx python javascript typescript java rust golang go sql postgres postgresql mysql bash
        shell zsh npm pip pytest debug debugging refactor stacktrace traceback function función funcion fonction
        funktion funzione função funcao method método metodo variable loop bucle array arreglo dataframe pandas
        numpy react vue angular django flask fastapi linter deploy deployment pod pods container contenedor
        cron query commit merge branch rebase stash compile compiler compila compilar segfault null undefined
        nullpointerexception typeerror valueerror keyerror json yaml yml csv html css jquery ssh grep awk sed
        systemctl journalctl nginx.conf repo github gitlab ci pipeline unittest junit maven gradle cargo rustc
        gcc clang makefile cmake lambda async await thread threads mutex deadlock api-key webhook http https
        curl powershell regex101 crashloopbackoff oomkilled kubelet ingress namespace configmap
        node nodejs nvm js ts php div const var nonetype attributeerror indexerror nameerror ubuntu
        virtualenv venv localhost
    """.split()
        ),
    ),
    "reasoning": (
        2.0,
        3,
        frozenset(
            """
        solve resuelve resolver resuelva résous résoudre löse löse risolvi risolvere resolva calcula calcular
        calcule calculate compute computa equation equations ecuación ecuaciones équation gleichung equazione
        equação derivative derivada dérivée ableitung integral intégrale probability probabilidad probabilité
        wahrscheinlichkeit probabilità probabilidade prime primes primzahl factorial percent percentage
        porcentaje pourcentage logic lógica logica puzzle acertijo riddle theorem teorema théorème velocity
        velocidad acceleration aceleración remainder divisible matrix matriz vector limit límite sequence
        sucesión series average promedio median mediana integrate integra intègre integriere twice half
        doble triple mitad knights knaves liar truth-teller mph combinations combinaciones permutations
        permutaciones odds dados geometry geometría triangle triángulo área area perimeter perímetro
        hypotenuse hipotenusa radius radio volume volumen interest interés compound fraction fracción
        integer entero algebra álgebra arithmetic aritmética calculus cálculo induction inducción
        razona razone ragiona raisonne logically lógicamente syllogism silogismo chance chances coin coins
        teilbar divisibile divisível irrational irracional irrationnel irrazionale irrational
    """.split()
        ),
    ),
    "long": (
        2.0,
        3,
        frozenset(
            """
        essay ensayo report informe story cuento relato article artículo articulo letter carta lettre brief
        lettera poem poema poème gedicht poesia poesía detailed detallado detallada thorough comprehensive
        exhaustivo exhaustiva extenso extensa dissertation disertación redacta rédige écris écrire schreibe
        schreiben scrivi escreva escribe write chapter capítulo speech discurso proposal propuesta newsletter
        syllabus temario ausführlich dettagliato dettagliata detalhado detalhada guide guía outline esquema
        biography biografía novel novela monologue monólogo review reseña narrative narración monografía
        monografia anschreiben bewerbungsanschreiben relatório relatorio longa larga lunga lengthy
        schreib verfasse verfassen escreve escrever escríbeme escribeme scrivimi écrivez
        rédigez redige redigir redacción redação redaccion aufsatz discorso discours kündigung eulogy toast
        racconto conte märchen relazione rapport
    """.split()
        ),
    ),
}
# class -> (weight, stems): a word starting with one of the stems counts once, like a word above.
STEMS: dict[str, tuple[float, tuple[str, ...]]] = {
    "code": (2.0, ("compil", "debugg", "refactor", "programa", "deploy", "serializ", "deserializ")),
    "reasoning": (2.0, ("demostr", "demuestr", "démontr", "demonstr", "beweis", "dimostr", "probabil", "calcul", "deriv", "anagram")),
    "long": (3.0, ("summar", "resum", "résum", "zusammenfass", "riassum", "sintetiz", "tradu", "translat",
                   "übersetz", "rewrite", "reescrib", "paraphras", "parafrase", "detallad", "dettagl", "detalhad",
                   "ausführlich", "resúm", "detall", "detalh", "detaill", "detailliert")),
}  # fmt: skip
# class -> (weight, phrases): searched as substrings of the lowercased text.
PHRASES: dict[str, tuple[float, tuple[str, ...]]] = {
    "reasoning": (4.0, ("step by step", "step-by-step", "paso a paso", "étape par étape", "schritt für schritt",
                        "passo a passo", "passo dopo passo", "show your work", "show the work", "prove that",
                        "proof that", "is it prime", "next number", "siguiente número", "what is the probability",
                        "in total", "show that", "montre que", "mostre que", "mostra che", "zeige dass", "zeig dass",
                        "prova que", "prove it", "prime number", "número primo", "numero primo", "nombre premier",
                        "números primos", "numeri primi", "es primo", "è primo", "é primo")),
    "long": (3.0, ("in detail", "en detalle", "en détail", "cover letter", "blog post", "lesson plan",
                   "plan de clase", "carta de presentación", "lettre de motivation", "tl dr", "tldr", "in depth",
                   "a fondo", "en profondeur", "in profondità", "em profundidade", "eine rede", "die rede", "half a page",
                   "media página", "mezza pagina", "meia página", "demi page", "demi-page")),
    "code": (3.0, ("stack trace", "unit test", "pull request", "merge request", "exit code", "command not found",
                   "no such file", "permission denied", "segmentation fault", "npm err", "error e0",
                   "panicked at", "most recent call last", "connection refused", "has no attribute", "is not defined",
                   "is not a function", "not subscriptable", "cannot read propert", "address already in use")),
    # Questions about a word's spelling, and prime ministers, are quick questions whatever words they hold.
    "short": (3.0, ("se escribe", "how do you spell", "s écrit", "si scrive", "se escreve", "schreibt man",
                    "prime minister", "primer ministro", "premier ministre", "primo ministro", "primeiro-ministro")),
}  # fmt: skip
# Questions that count or measure: a word problem when the text gives numbers to work with, otherwise a
# quick question of fact ("how many bones are in the human body?").
COUNTING: tuple[float, tuple[str, ...]] = (4.0, (
    "how many", "how much time", "how long would", "how far", "how high", "how old", "how much does",
    "cuántos", "cuántas", "cuantos", "cuantas", "qué edad", "cuánto tiempo", "cuánto tarda", "combien",
    "wie viele", "wie lange", "quanti ", "quanto tempo", "quantos", "quantas",
))  # fmt: skip
NUMBER_WORDS = frozenset(
    """
    two three four five six seven eight nine ten eleven twelve twenty hundred half twice dos tres cuatro cinco
    seis siete ocho nueve diez doce veinte cien mitad deux trois quatre cinq sept huit neuf dix douze vingt
    cent moitié zwei drei vier fünf sechs sieben acht neun zehn zwölf zwanzig hundert hälfte due tre quattro
    cinque sette otto nove dieci dodici venti cento metà duas três sete oito dez doze vinte cem metade
    """.split()
)
# class -> [(pattern, weight, most hits counted)]: structure, not vocabulary. Each starts with a literal or a
# small class of characters, so the regex engine skips ahead quickly instead of trying every position.
PATTERNS: dict[str, list[tuple[re.Pattern[str], float, int]]] = {
    "code": [
        (re.compile(r"\.(?:py|js|mjs|ts|tsx|jsx|go|rs|java|kt|cs|cpp|cc|hpp|rb|php|sh|sql|ya?ml|toml|json|tf|"
                    r"swift|scala|lua|dart|vue|ipynb|gradle|conf|ini|env|lock|log)\b"), 3.0, 2),
        (re.compile(r"^[ \t]*(?:def |class |import |from \S+ import|return |function |const |let |var |fn |impl |"
                    r"struct |pub |public |private |package |#include|SELECT |INSERT |UPDATE |DELETE |"
                    r"CREATE TABLE|apiVersion:|kind:|FROM \S+:|RUN |server \{|location /)", re.MULTILINE), 2.0, 4),
        (re.compile(r"[;{}][ \t]*$", re.MULTILINE), 1.0, 3),
        (re.compile(r"`[^`\n]+`"), 1.5, 2),
    ],
    "reasoning": [
        # A hyphen between digits counts only with a space beside it: 3 - 2 is a sum, 2024-05-20 a date.
        (re.compile(r"\d[ \t]*[+*/^×÷=<>≤≥][ \t]*\(?\d|\d(?:[ \t]+-|-[ \t]+)[ \t]*\(?\d"), 2.0, 3),
        (re.compile(r"\d[ \t]*%|\d[ \t]*(?:km/h|mph|m/s|°)"), 2.0, 2),
        (re.compile(r"[√∫∑∏π∞≈≠²³]|\^\d"), 2.0, 2),
    ],
}  # fmt: skip
# Numbers: a short word problem has several; in a pasted report or log they are only data.
NUMBERS = (re.compile(r"\d[\d.,]*"), 0.75, 4)
# class -> (weight per hit, most hits counted, substrings): syntax that words cannot show.
MARKS: dict[str, tuple[float, int, tuple[str, ...]]] = {
    "code": (1.0, 4, ("=>", "::", "->", "!=", "===", "$(", "()", " --", "./", "/etc/", "/var/", "~/", "\n    at ",
                      "\tat ", "error:", "exception")),
}  # fmt: skip
# "2 pages", "half a page", "dos páginas": any count of pages asks for long-form writing ("a web page" does not).
PAGE_UNITS = frozenset("page pages página páginas pagina pagine seite seiten".split())
PAGE_COUNTS = frozenset("one half media mezza meia demi".split())
LENGTH_UNITS = frozenset(
    "words palabras mots wörter parole palavras pages páginas paragraphs párrafos paragraphes".split()
)
# Punctuation becomes a space, so that str.split() yields words: far cheaper than a word regex.
PUNCTUATION = str.maketrans({c: " " for c in "\"'`.,;:!?¿¡()[]{}<>=+*/\\|#@&%$^~\n\t\r«»“”‘’"})

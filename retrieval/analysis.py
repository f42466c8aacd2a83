"""Analyzers that reproduce Elasticsearch's ``standard`` and ``english`` analyzers.

``standard``: Lucene's ``StandardTokenizer`` (Unicode UAX#29 word boundaries) + lowercase.
``english``:  standard tokenizer → English possessive filter (drops a trailing ``'s``) → lowercase →
              Lucene's English stop words → Porter stemmer (Lucene's variant, see ``porter.py``).

The tokenizer is a regular-expression rendering of the UAX#29 rules that matter for text in Latin
scripts: letters and digits join into one token; ``.`` ``'`` ``’`` and ``:`` join two letters
(``u.s.a``, ``don't``); ``.`` ``,`` ``;`` ``'`` join two digits (``3.14``, ``1,000``); ``_`` joins
anything. Each CJK ideograph is a token of its own, as in Lucene. Tokens longer than 255 characters are
split, as Elasticsearch's default ``max_token_length`` does. Parity with a real server is checked in
the engine tests with its ``_analyze`` API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .porter import porter_stem

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which Elasticsearch's ``_english_`` stop list uses.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

MAX_TOKEN_LENGTH = 255

_IDEOGRAPH = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_LETTER = rf"[^\W\d_{_IDEOGRAPH}]"
_WORD_CHAR = rf"[^\W{_IDEOGRAPH}]"  # letters, digits, marks and underscore, but not ideographs
_TOKEN = re.compile(
    rf"""
    [{_IDEOGRAPH}]                                   # an ideograph is a token by itself
    | {_WORD_CHAR}+
      (?:
        (?: (?<={_LETTER})[.'’:\u00b7](?={_LETTER})  # MidLetter / MidNumLet between letters
          | (?<=\d)[.,;'’](?=\d)                     # MidNum / MidNumLet between digits
        )
        {_WORD_CHAR}+
      )*
    """,
    re.VERBOSE,
)


def standard_tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens the way Lucene's StandardTokenizer does (original case kept)."""
    tokens = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.strip("_") == "":  # underscores alone form no word in UAX#29
            continue
        if len(token) <= MAX_TOKEN_LENGTH:
            tokens.append(token)
        else:
            tokens.extend(token[i : i + MAX_TOKEN_LENGTH] for i in range(0, len(token), MAX_TOKEN_LENGTH))
    return tokens


_POSSESSIVE_SUFFIXES = ("'s", "'S", "’s", "’S", "\uff07s", "\uff07S")


def _strip_possessive(token: str) -> str:
    return token[:-2] if token.endswith(_POSSESSIVE_SUFFIXES) else token


def standard_analyzer(text: str) -> list[str]:
    """Elasticsearch's ``standard`` analyzer: tokens lowercased, no stop words, no stemming."""
    return [token.lower() for token in standard_tokenize(text)]


def english_analyzer(text: str) -> list[str]:
    """Elasticsearch's ``english`` analyzer: possessives, lowercase, stop words, Porter stemming."""
    terms = []
    for token in standard_tokenize(text):
        term = _strip_possessive(token).lower()
        if term and term not in ENGLISH_STOP_WORDS:
            terms.append(porter_stem(term))
    return terms


@dataclass(frozen=True)
class Analyzer:
    """A named analyzer: ``name`` is what Elasticsearch calls it, ``analyze`` maps text to terms."""

    name: str
    analyze: Callable[[str], list[str]]

    def __call__(self, text: str) -> list[str]:
        return self.analyze(text)


ANALYZERS = {
    "standard": Analyzer("standard", standard_analyzer),
    "english": Analyzer("english", english_analyzer),
}


def get_analyzer(name: str) -> Analyzer:
    """Look up an analyzer by its Elasticsearch name; raises ``ValueError`` naming the choices."""
    try:
        return ANALYZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {sorted(ANALYZERS)}") from None

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
import unicodedata
from dataclasses import dataclass
from typing import Callable

from .porter import porter_stem

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which Elasticsearch's ``_english_`` stop list uses.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

MAX_TOKEN_LENGTH = 255

def _other_numbers() -> str:
    """Characters Python counts as word characters but UAX#29 does not join into words: Unicode's
    "other number" category (superscripts ², fractions ½, circled digits ①)."""
    chars = (chr(c) for c in range(0x30000) if unicodedata.category(chr(c)) == "No")
    return "".join(re.escape(c) for c in chars)


_IDEOGRAPH = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_NOT_IN_WORDS = _IDEOGRAPH + _other_numbers()
# Extended_Pictographic symbols Lucene emits as <EMOJI> tokens (©, ®, ™, arrows, dingbats, emoji)
_EMOJI = (r"\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf"
          r"\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u2605\u2607-\u2612"
          r"\u2614-\u2685\u2690-\u2705\u2708-\u2712\u2714\u2716\u271d\u2721\u2728\u2733\u2734\u2744\u2747"
          r"\u274c\u274e\u2753-\u2755\u2757\u2763-\u2767\u2795-\u2797\u27a1\u27b0\u27bf"
          r"\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001faff")
# Format and joiner characters (soft hyphen, ZWJ, bidi marks) attach to the character before them (WB4)
_FORMAT = (r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200c-\u200f\u202a-\u202e\u2060-\u2064"
           r"\u2066-\u206f\ufeff\ufff9-\ufffb")
_LETTER = rf"[^\W\d_{_NOT_IN_WORDS}]"
_WORD_CHAR = rf"[^\W{_NOT_IN_WORDS}]"  # letters, digits, marks and underscore; not ideographs, not ²
_TOKEN = re.compile(
    rf"""
    [{_IDEOGRAPH}]                                   # an ideograph is a token by itself
    | [{_EMOJI}][\ufe0f\U0001f3fb-\U0001f3ff]*    # an emoji, with its variation selector or skin tone
    | {_WORD_CHAR}[{_FORMAT}]*(?:{_WORD_CHAR}[{_FORMAT}]*)*
      (?:
        (?: (?<={_LETTER})[.'’:\u00b7](?={_LETTER})  # MidLetter / MidNumLet between letters
          | (?<=\d)[.,;'’](?=\d)                     # MidNum / MidNumLet between digits
        )
        (?:{_WORD_CHAR}[{_FORMAT}]*)+
      )*
    """,
    re.VERBOSE,
)
# The same rules for text that is all ASCII (most English text): no ideographs, emoji, format characters
# or other numbers can occur, and the small character classes make it ~10x faster than _TOKEN.
_ASCII_TOKEN = re.compile(
    r"[A-Za-z0-9_]+(?:(?:(?<=[A-Za-z])[.':](?=[A-Za-z])|(?<=[0-9])[.,;'](?=[0-9]))[A-Za-z0-9_]+)*"
)


def standard_tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens the way Lucene's StandardTokenizer does (original case kept)."""
    tokens = []
    for token in (_ASCII_TOKEN if text.isascii() else _TOKEN).findall(text):
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

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

from esrerank_errors import InputError

from .porter import porter_stem

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which Elasticsearch's ``_english_`` stop list uses.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

MAX_TOKEN_LENGTH = 255

def _other_numbers() -> str:
    """Characters Python counts as word characters but UAX#29 does not join into words: Unicode's
    "other number" category (superscripts ², fractions ½, circled digits ①), as a character class body
    of ranges: 895 characters in 71 runs, which the regex engine tests ~5x faster than 895 literals."""
    codes = [c for c in range(0x30000) if unicodedata.category(chr(c)) == "No"]
    runs, first, last = [], codes[0], codes[0]
    for code in codes[1:]:
        if code != last + 1:
            runs.append((first, last))
            first = code
        last = code
    runs.append((first, last))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs)


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


def _standard_term(token: str) -> str | None:
    return token.lower()


def _english_term(token: str) -> str | None:
    term = _strip_possessive(token).lower()
    if not term or term in ENGLISH_STOP_WORDS:
        return None
    return porter_stem(term)


def standard_analyzer(text: str) -> list[str]:
    """Elasticsearch's ``standard`` analyzer: tokens lowercased, no stop words, no stemming."""
    return [token.lower() for token in standard_tokenize(text)]


def english_analyzer(text: str) -> list[str]:
    """Elasticsearch's ``english`` analyzer: possessives, lowercase, stop words, Porter stemming."""
    terms = []
    for token in standard_tokenize(text):
        term = _english_term(token)
        if term is not None:
            terms.append(term)
    return terms


@dataclass(frozen=True)
class Analyzer:
    """A named analyzer: ``name`` is what Elasticsearch calls it, ``analyze`` maps text to terms, and
    ``term_of_token`` maps one token of ``standard_tokenize`` to its term (None when dropped), which is
    what lets :class:`TermEncoder` analyze each distinct token once."""

    name: str
    analyze: Callable[[str], list[str]]
    term_of_token: Callable[[str], str | None]

    def __call__(self, text: str) -> list[str]:
        return self.analyze(text)


ANALYZERS = {
    "standard": Analyzer("standard", standard_analyzer, _standard_term),
    "english": Analyzer("english", english_analyzer, _english_term),
}


def get_analyzer(name: str) -> Analyzer:
    """Look up an analyzer by its Elasticsearch name; raises ``InputError`` (a ``ValueError``) naming the
    choices."""
    try:
        return ANALYZERS[name]
    except KeyError:
        raise InputError(f"unknown analyzer {name!r}; choose one of {sorted(ANALYZERS)}") from None


class _TermIds(dict):
    """token → term id, filled on first sight of a token (-1: the analyzer drops it, -3: too long, split)."""

    def __init__(self, encoder: "TermEncoder"):
        super().__init__()
        self._encoder = encoder

    def __missing__(self, token: str) -> int:
        if len(token) > MAX_TOKEN_LENGTH:
            term_id = _SPLIT
        elif token.strip("_") == "":
            term_id = _DROPPED
        else:
            term = self._encoder.analyzer.term_of_token(token)
            term_id = _DROPPED if term is None else self._encoder.term_id(term)
        self[token] = term_id
        return term_id


_DROPPED, _SEPARATOR, _SPLIT = -1, -2, -3
_SPECIAL = re.compile(rf"[{_IDEOGRAPH}{_EMOJI}{_FORMAT}{_NOT_IN_WORDS}]")
# Letters that can mark the boundary between two texts joined into one string: the first one the batch
# does not use is its own token there (texts are joined with "\n<letter>\n"; no token crosses a newline).
_BOUNDARY_LETTERS = "ĀāĂăĄąĆćĈĉĊċČčĎď"


def _batch_tokenizer(extra_chars: str) -> re.Pattern:
    """``_TOKEN`` for text whose only non-ASCII characters are ``extra_chars`` (none of them special):
    the same rules with small explicit character classes, which the regex engine tests as fast as ASCII
    (the Unicode classes of ``_TOKEN`` make it ~15x slower on such text)."""
    letters = "".join(c for c in extra_chars if re.fullmatch(_LETTER, c))
    digits = "".join(c for c in extra_chars if re.fullmatch(r"\d", c))
    word = "".join(c for c in extra_chars if re.fullmatch(_WORD_CHAR, c))
    w, letter, digit = (f"[{ascii_part}{re.escape(chars)}]" for ascii_part, chars in
                        (("A-Za-z0-9_", word), ("A-Za-z", letters), ("0-9", digits)))
    return re.compile(rf"{w}+(?:(?:(?<={letter})[.'’:\u00b7](?={letter})|(?<={digit})[.,;'’](?={digit})){w}+)*")


class TermEncoder:
    """Analyzes batches of texts into term ids, growing a vocabulary (term → id) as it goes.

    Gives the same terms as ``analyzer(text)`` for every text, several times faster on large corpora:
    the batch is joined into one string (ASCII texts lowercased first, which leaves fewer distinct
    tokens) and tokenized in one pass of an expression equivalent to the tokenizer's for the characters
    the batch uses (``_batch_tokenizer``); each distinct token is analyzed (stop words, stemming) once
    and then looked up. Texts with ideographs, emoji, format characters or other numbers take the full
    Unicode tokenizer one by one.
    """

    def __init__(self, analyzer: Analyzer | str, vocabulary: dict[str, int] | None = None):
        self.analyzer = get_analyzer(analyzer) if isinstance(analyzer, str) else analyzer
        self.vocabulary: dict[str, int] = {} if vocabulary is None else vocabulary
        # token → term id. Lowercased ASCII tokens and raw tokens share it: the analyzers lowercase
        # first, so a token and its lowercase have the same term.
        self._token_ids = _TermIds(self)
        self._tokenizers: dict[str, re.Pattern] = {}

    def term_id(self, term: str) -> int:
        return self.vocabulary.setdefault(term, len(self.vocabulary))

    def encode(self, texts: list[str]):
        """Term ids of a batch: (ids, lengths), ids an int32 array of all the batch's terms in order and
        lengths (int64) how many belong to each text."""
        import numpy as np

        non_ascii = [i for i, text in enumerate(texts) if not text.isascii()]
        extra = set("".join(texts[i] for i in non_ascii)) - _ASCII_CHARS
        special_chars = "".join(c for c in extra if _SPECIAL.match(c))
        if special_chars:
            special_pattern = re.compile(f"[{re.escape(special_chars)}]")
            special = [i for i in non_ascii if special_pattern.search(texts[i])]
            special_set = set(special)
            plain = [("" if i in special_set else text) for i, text in enumerate(texts)]
            extra = set("".join(plain[i] for i in non_ascii)) - _ASCII_CHARS
        else:
            special, plain = [], texts
        extra = "".join(sorted(extra))
        boundary = next(c for c in _BOUNDARY_LETTERS if c not in extra)
        tokenizer = self._tokenizers.get(extra + boundary)
        if tokenizer is None:
            if len(self._tokenizers) > 256:
                self._tokenizers.clear()
            tokenizer = self._tokenizers[extra + boundary] = _batch_tokenizer(extra + boundary)
        joined = f"\n{boundary}\n".join(text.lower() if text.isascii() else text for text in plain)
        tokens = tokenizer.findall(joined)
        saved = self._token_ids.pop(boundary, None)
        self._token_ids[boundary] = _SEPARATOR  # the batch's own texts do not use this letter
        try:
            ids = np.fromiter(map(self._token_ids.__getitem__, tokens), dtype=np.int32, count=len(tokens))
        finally:
            del self._token_ids[boundary]
            if saved is not None:
                self._token_ids[boundary] = saved
        document = np.cumsum(ids == _SEPARATOR)
        if (ids == _SPLIT).any():  # a token over 255 characters is split in several terms: redo those texts
            special = sorted(set(special) | set(document[ids == _SPLIT].tolist()))
        keep = ids >= 0
        ids, document = ids[keep], document[keep]
        lengths = np.bincount(document, minlength=len(texts)).astype(np.int64)
        if not special:
            return ids, lengths
        redone = [self._encode_one(texts[i]) for i in special]
        keep_doc = np.ones(len(texts), dtype=bool)
        keep_doc[special] = False
        kept = keep_doc[document]
        ids, document = ids[kept], document[kept]
        lengths[special] = [len(piece) for piece in redone]
        starts = np.cumsum(lengths) - lengths
        out = np.empty(int(lengths.sum()), dtype=np.int32)
        # each kept term goes to its text's new start plus its place within the text
        within = np.arange(len(ids)) - np.repeat(np.cumsum(lengths * keep_doc) - lengths * keep_doc,
                                                 lengths * keep_doc)
        out[starts[document] + within] = ids
        for i, piece in zip(special, redone):
            out[starts[i]:starts[i] + len(piece)] = piece
        return out, lengths

    def _encode_one(self, text: str):
        import numpy as np

        ids = [self._token_ids[token] for token in (_ASCII_TOKEN if text.isascii() else _TOKEN).findall(text)]
        if _SPLIT not in ids:
            return np.array([i for i in ids if i >= 0], dtype=np.int32)
        return np.array([self.term_id(term) for term in self.analyzer(text)], dtype=np.int32)


_ASCII_CHARS = frozenset(chr(c) for c in range(128))

"""The Porter stemmer as Lucene's ``PorterStemFilter`` applies it (Elasticsearch's ``english`` stemmer).

Lucene follows Martin Porter's reference C implementation, which departs from the 1980 paper in three
ways that matter for parity with a real engine: words of one or two characters are never stemmed,
step 2 maps ``-bli`` to ``-ble`` (the paper has ``-abli``), and it adds ``-logi`` → ``-log``. The
Snowball "porter" stemmer (PyStemmer) follows the paper, so it differs on words such as ``us``→``u``;
that is why this module exists instead of a dependency. It is checked against NLTK's
``MARTIN_EXTENSIONS`` mode and a real server's ``_analyze`` in the tests.
"""

from __future__ import annotations

from functools import lru_cache

_VOWELS = frozenset("aeiou")


def _is_consonant(word: str, i: int) -> bool:
    ch = word[i]
    if ch in _VOWELS:
        return False
    if ch == "y":
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """Number of vowel→consonant transitions in ``stem`` (Porter's m)."""
    m = 0
    previous_was_vowel = False
    for i in range(len(stem)):
        consonant = _is_consonant(stem, i)
        if consonant and previous_was_vowel:
            m += 1
        previous_was_vowel = not consonant
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _ends_double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _is_consonant(word, len(word) - 1)


def _ends_cvc(word: str) -> bool:
    """consonant-vowel-consonant ending, the last not w, x or y (restores e in hop(e), lov(e))."""
    n = len(word)
    return (
        n >= 3
        and _is_consonant(word, n - 1)
        and not _is_consonant(word, n - 2)
        and _is_consonant(word, n - 3)
        and word[-1] not in "wxy"
    )


def _replace_if_measure(word: str, suffix: str, replacement: str, min_measure: int = 1) -> str | None:
    """If ``word`` ends with ``suffix``, return the replaced word when the stem's m is large enough,
    else the word unchanged; ``None`` when the suffix does not match (so callers try the next rule)."""
    if not word.endswith(suffix):
        return None
    stem = word[: len(word) - len(suffix)]
    return stem + replacement if _measure(stem) >= min_measure else word


def _step1(word: str) -> str:
    if word.endswith("s"):
        if word.endswith("sses"):
            word = word[:-2]
        elif word.endswith("ies"):
            word = word[:-2]
        elif len(word) >= 2 and word[-2] != "s":
            word = word[:-1]
    if word.endswith("eed"):
        if _measure(word[:-3]) > 0:
            word = word[:-1]
        return word
    for suffix in ("ed", "ing"):
        if word.endswith(suffix) and _has_vowel(word[: -len(suffix)]):
            word = word[: -len(suffix)]
            if word.endswith(("at", "bl", "iz")):
                return word + "e"
            if _ends_double_consonant(word):
                return word if word[-1] in "lsz" else word[:-1]
            if _measure(word) == 1 and _ends_cvc(word):
                return word + "e"
            return word
    return word


def _step2(word: str) -> str:
    if word.endswith("y") and _has_vowel(word[:-1]):
        return word[:-1] + "i"
    return word


# Rules grouped by the penultimate letter, tried in order; the first suffix that matches decides,
# whether or not its measure condition holds (as in the reference implementation).
_STEP3_RULES = {
    "a": (("ational", "ate"), ("tional", "tion")),
    "c": (("enci", "ence"), ("anci", "ance")),
    "e": (("izer", "ize"),),
    "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
    "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
    "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
    "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
    "g": (("logi", "log"),),
}
_STEP4_RULES = {
    "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
    "i": (("iciti", "ic"),),
    "l": (("ical", "ic"), ("ful", "")),
    "s": (("ness", ""),),
}
_STEP5_SUFFIXES = {
    "a": ("al",),
    "c": ("ance", "ence"),
    "e": ("er",),
    "i": ("ic",),
    "l": ("able", "ible"),
    "n": ("ant", "ement", "ment", "ent"),
    "o": ("ion", "ou"),
    "s": ("ism",),
    "t": ("ate", "iti"),
    "u": ("ous",),
    "v": ("ive",),
    "z": ("ize",),
}


def _apply_rules(word: str, rules: dict, key_char: str) -> str:
    for suffix, replacement in rules.get(key_char, ()):
        result = _replace_if_measure(word, suffix, replacement)
        if result is not None:
            return result
    return word


def _step5(word: str) -> str:
    if len(word) < 2:
        return word
    for suffix in _STEP5_SUFFIXES.get(word[-2], ()):
        if not word.endswith(suffix):
            continue
        stem = word[: len(word) - len(suffix)]
        if suffix == "ion" and not (stem and stem[-1] in "st"):
            continue
        return stem if _measure(stem) > 1 else word
    return word


def _step6(word: str) -> str:
    if word.endswith("e"):
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _ends_cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("l") and _ends_double_consonant(word) and _measure(word) > 1:
        word = word[:-1]
    return word


@lru_cache(maxsize=1 << 20)
def porter_stem(word: str) -> str:
    """Stem one lowercased token exactly as Lucene's ``PorterStemmer`` does."""
    if len(word) <= 2:
        return word
    word = _step1(word)
    word = _step2(word)
    if len(word) > 1:
        word = _apply_rules(word, _STEP3_RULES, word[-2])
    word = _apply_rules(word, _STEP4_RULES, word[-1])
    word = _step5(word)
    return _step6(word)

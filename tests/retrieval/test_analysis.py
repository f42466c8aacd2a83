import json

import numpy as np
import pytest
from nltk.stem.porter import PorterStemmer

from retrieval.analysis import ENGLISH_STOP_WORDS, english_analyzer, get_analyzer, standard_analyzer, standard_tokenize
from retrieval.corpus import iter_beir_corpus
from retrieval.porter import porter_stem


def _vocabulary(folder):
    words = set()
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            words.update(standard_analyzer(f"{row['title']} {row['text']}"))
    return words


def test_porter_matches_reference_implementation_on_real_vocabularies(scifact, vaswani, cranfield):
    # NLTK's MARTIN_EXTENSIONS mode is Martin Porter's reference implementation, which Lucene follows.
    oracle = PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)
    vocabulary = _vocabulary(scifact) | _vocabulary(vaswani) | _vocabulary(cranfield)
    assert len(vocabulary) > 40_000
    mismatches = [(w, porter_stem(w), oracle.stem(w)) for w in vocabulary if porter_stem(w) != oracle.stem(w)]
    assert mismatches == []


@pytest.mark.parametrize("word,stem", [
    ("caresses", "caress"), ("ponies", "poni"), ("agreed", "agre"), ("hopping", "hop"), ("filing", "file"),
    ("relational", "relat"), ("generalizations", "gener"), ("us", "us"), ("is", "is"), ("analogi", "analog"),
    ("sensibility", "sensibl"),
])
def test_porter_known_stems(word, stem):
    assert porter_stem(word) == stem


def test_standard_tokenizer_follows_uax29_joins():
    text = "The U.S.A. don't cost 3.14 or 1,000 dollars; wi-fi foo_bar e-mail: x.1"
    assert standard_tokenize(text) == ["The", "U.S.A", "don't", "cost", "3.14", "or", "1,000", "dollars",
                                       "wi", "fi", "foo_bar", "e", "mail", "x", "1"]


def test_ascii_fast_path_equals_the_full_uax29_expression(scifact, vaswani, cranfield):
    # ASCII text takes a smaller expression; it must cut exactly where the full Unicode one does.
    from retrieval.analysis import _ASCII_TOKEN, _TOKEN

    texts = ["U.S.A. don't 3.14 1,000 x.1 1.x a:b 1:2 a'1 1'2 __ _a_ a__b 9;9 a;b ..a.. 'a' a.b.c.d 1.2.3,4;5"]
    for folder in (scifact, vaswani, cranfield):
        with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
            texts.extend(f"{row['title']} {row['text']}" for row in map(json.loads, handle))
    ascii_texts = [t for t in texts if t.isascii()]
    assert len(ascii_texts) > 15_000
    assert [t for t in ascii_texts if _ASCII_TOKEN.findall(t) != _TOKEN.findall(t)] == []


def test_standard_tokenizer_ideographs_and_long_tokens():
    assert standard_tokenize("検索エンジン 中文") == ["検", "索", "エンジン", "中", "文"]
    assert [len(t) for t in standard_tokenize("a" * 600)] == [255, 255, 90]


def test_english_analyzer_chain():
    assert english_analyzer("The Cat's toys are running quickly") == ["cat", "toi", "run", "quickli"]
    assert standard_analyzer("The Cat's toys") == ["the", "cat's", "toys"]
    assert not set(english_analyzer(" ".join(sorted(ENGLISH_STOP_WORDS)))), "stop words must all go"


def test_unknown_analyzer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown analyzer 'french'.*english"):
        get_analyzer("french")


TRICKY_TEXTS = [
    "", "   ", "_ __ a_b", "JOHN'S don't U.S.A 3.14 1,000 x.y:z", "y" * 600 + " after a long token",
    "α-β’s Ωmega·x 3’5 ‿_ ¼x ①② x\u00ady 中文字 ok ©™ 😀👍🏽", "Ā Āb ā ĂĄ", "naïve café CAFÉ'S Straße İstanbul",
    "٣٤ ٣,٤ digits", "x \U0001f9ff y", "Q q QQ Q.Q",
]


@pytest.mark.parametrize("analyzer_name", ["english", "standard"])
def test_term_encoder_gives_the_analyzers_terms(scifact, vaswani, cranfield, analyzer_name):
    """The batch encoder (one regex pass per batch, each distinct token analyzed once) against the
    analyzer run text by text, on the three real collections (about 1,200 non-ASCII texts) and texts
    aimed at each special case; batches mix ASCII, non-ASCII and special texts."""
    from retrieval.analysis import TermEncoder, get_analyzer

    texts = [d.contents for path in (scifact, vaswani, cranfield) for d in iter_beir_corpus(path / "corpus.jsonl")]
    texts = TRICKY_TEXTS + texts[:6000] + TRICKY_TEXTS + texts[6000:]
    analyzer = get_analyzer(analyzer_name)
    encoder = TermEncoder(analyzer)
    terms = {}
    for start in range(0, len(texts), 2500):
        batch = texts[start:start + 2500]
        ids, lengths = encoder.encode(batch)
        assert ids.dtype == np.int32 and lengths.sum() == len(ids) and len(lengths) == len(batch)
        vocabulary = sorted(encoder.vocabulary, key=encoder.vocabulary.__getitem__)
        ends = np.cumsum(lengths)
        for text, end, length in zip(batch, ends, lengths):
            terms[text] = [vocabulary[i] for i in ids[end - length:end]]
    mismatched = [text[:60] for text in terms if terms[text] != analyzer(text)]
    assert not mismatched
    assert sum(not text.isascii() for text in texts) > 1000

"""Hard-negative mining on real data (SciFact, in-memory BM25)."""

import numpy as np
import pytest

from pipelines.mining import MiningConfig, mine_hard_negatives, save_mined
from pipelines.recipe import split_queries
from pipelines.retrieve_rerank import first_stage_run
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir


@pytest.fixture(scope="module")
def setup(scifact):
    collection = load_beir(scifact, "train")
    queries = collection.queries[:150]
    index = InMemoryBM25(collection.documents)
    candidates = first_stage_run(index, queries, 100)
    texts = collection.texts()
    return collection, queries, candidates, texts


def _window(query, collection, candidates, config):
    positives = {d for d, g in collection.qrels[query.query_id].items() if g > 0}
    ranked = [h.doc_id for h in candidates[query.query_id][: config.retrieve_k] if h.doc_id not in positives]
    return positives, ranked[config.range_min:config.range_max]


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_negatives_come_only_from_the_window_and_never_are_positives(setup, sampling):
    collection, queries, candidates, texts = setup
    config = MiningConfig(retrieve_k=80, range_min=5, range_max=40, num_negatives=7, num_random_negatives=0,
                          sampling=sampling, seed=3)
    rows, stats = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, show_progress=False)
    def positive_texts(query):
        return [texts[d] for d, g in collection.qrels[query.query_id].items() if g > 0]

    text_to_ids = {}
    for doc_id, text in texts.items():
        text_to_ids.setdefault(text, set()).add(doc_id)
    assert len(rows) == stats.kept > 100
    for row in rows:
        row_positives = [t for t, label in zip(row["docs"], row["labels"]) if label == 1]
        # some claims share their text (and then their candidates); any with the row's positives will do
        query = next(q for q in queries if q.text == row["query"] and positive_texts(q) == row_positives)
        positives, window = _window(query, collection, candidates, config)
        negatives = [d for d, label in zip(row["docs"], row["labels"]) if label == 0]
        assert len(negatives) == min(7, len(window))
        for text in negatives:
            ids = text_to_ids[text]
            assert not ids & positives, "a positive was emitted as a negative"
            assert ids & set(window), "a negative from outside the requested window"
        if sampling == "top":
            assert [next(iter(text_to_ids[t] & set(window))) for t in negatives] == window[:7]


def test_same_seed_same_dataset_other_seed_other_sample(setup, tmp_path):
    import datasets

    collection, queries, candidates, texts = setup
    config = MiningConfig(sampling="random", seed=7)
    a, _ = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, show_progress=False)
    b, _ = mine_hard_negatives(list(reversed(queries)), collection.qrels, candidates, texts, config, show_progress=False)
    assert sorted(map(str, a)) == sorted(map(str, b))
    c, _ = mine_hard_negatives(queries, collection.qrels, candidates, texts, MiningConfig(sampling="random", seed=8),
                               show_progress=False)
    assert a != c
    again, stats = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, show_progress=False)
    first = save_mined(a, stats, config, tmp_path / "one")
    second = save_mined(again, stats, config, tmp_path / "two")  # a second, independent run: same bytes
    assert first.to_list() == second.to_list()
    assert datasets.load_from_disk(str(tmp_path / "two")).to_list() == first.to_list()  # as saved, so loaded
    other = save_mined(c, stats, MiningConfig(sampling="random", seed=8), tmp_path / "three")
    assert other.to_list() != first.to_list()
    assert (tmp_path / "one" / "stats.json").is_file() and (tmp_path / "one" / "mining_config.json").is_file()


def test_stats_report_recall_and_skips(setup):
    collection, queries, candidates, texts = setup
    config = MiningConfig(retrieve_k=10, range_max=10, num_negatives=9, num_random_negatives=0, output_format="n-tuple")
    rows, stats = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, show_progress=False)
    summary = stats.summary()
    found = sum(h.doc_id in collection.qrels[q.query_id] for q in queries for h in candidates[q.query_id][:10])
    assert summary["positives_in_candidates"] == found
    assert summary["positives"] == sum(len(collection.qrels[q.query_id]) for q in queries)
    assert summary["kept"] + sum(summary["skipped"].values()) == len(queries)
    assert summary["skipped"].get("fewer than 9 negatives (n-tuple)", 0) > 0
    assert all(len([k for k in row if k.startswith("negative_")]) == 9 for row in rows)


@pytest.mark.parametrize("output_format", ["triplet", "labeled-pair", "n-tuple"])
def test_other_formats_hold_the_labeled_lists_documents(setup, output_format):
    # The same mining in each format: every format's rows are the labeled list's (query, positives,
    # negatives), re-expressed as the module docstring says, in the same order (the labeled lists' content
    # is checked against the first stage itself in the tests above and below).
    collection, queries, candidates, texts = setup
    config = dict(num_negatives=3, num_random_negatives=1, seed=4)
    lists, _ = mine_hard_negatives(queries[:20], collection.qrels, candidates, texts, MiningConfig(**config),
                                   show_progress=False)
    rows, stats = mine_hard_negatives(queries[:20], collection.qrels, candidates, texts,
                                      MiningConfig(**config, output_format=output_format), show_progress=False)
    expected = []
    for row in lists:
        positives = [d for d, label in zip(row["docs"], row["labels"]) if label == 1]
        negatives = [d for d, label in zip(row["docs"], row["labels"]) if label == 0]
        assert row["labels"] == [1] * len(positives) + [0] * len(negatives) and len(negatives) == 4
        if output_format == "triplet":
            expected += [{"query": row["query"], "positive": p, "negative": n} for p in positives for n in negatives]
        elif output_format == "labeled-pair":
            expected += [{"query": row["query"], "passage": d, "label": label}
                         for d, label in zip(row["docs"], row["labels"])]
        else:
            expected += [{"query": row["query"], "positive": p, "negative_1": negatives[0], "negative_2": negatives[1],
                          "negative_3": negatives[2], "negative_4": negatives[3]} for p in positives]
    assert len(lists) > 10 and rows == expected
    assert stats.rows == len(rows)


def test_teacher_filter_drops_negatives_scored_close_to_the_positive(setup, tiny_cross_encoder):
    from rerank.cross_encoder import CrossEncoder

    collection, queries, candidates, texts = setup
    teacher = CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32")
    margin = 0.001
    rows, stats = mine_hard_negatives(queries[:25], collection.qrels, candidates, texts,
                                      MiningConfig(absolute_margin=margin, num_negatives=50, num_random_negatives=0),
                                      teacher,
                                      show_progress=False)
    assert stats.removed_by_teacher > 0
    for row in rows:
        scores = teacher.predict([(row["query"], d) for d in row["docs"]])
        labels = np.array(row["labels"])
        assert scores[labels == 0].max() <= scores[labels == 1].min() - margin + 1e-5
    with pytest.raises(ValueError, match="needs a teacher"):
        mine_hard_negatives(queries, collection.qrels, candidates, texts, MiningConfig(absolute_margin=0.1))


def test_dev_split_is_disjoint_and_stable(setup):
    collection = setup[0]
    train, dev = split_queries(collection.queries, 200, seed=12)
    assert len(dev) == 200 and len(train) == len(collection.queries) - 200
    assert not {q.query_id for q in train} & {q.query_id for q in dev}
    assert split_queries(list(reversed(collection.queries)), 200, seed=12)[1] == \
        sorted(dev, key=lambda q: [x.query_id for x in reversed(collection.queries)].index(q.query_id))


def test_random_negatives_are_extra_distinct_seeded_and_never_positives(setup):
    collection, queries, candidates, texts = setup
    config = MiningConfig(num_negatives=4, num_random_negatives=3, seed=5)
    rows, _ = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, show_progress=False)
    hard_only, _ = mine_hard_negatives(queries, collection.qrels, candidates, texts,
                                       MiningConfig(num_negatives=4, num_random_negatives=0, seed=5), show_progress=False)
    text_to_ids = {}
    for doc_id, text in texts.items():
        text_to_ids.setdefault(text, set()).add(doc_id)
    top100 = {q.query_id: {h.doc_id for h in candidates[q.query_id]} for q in queries}
    outside_top100 = 0
    for row, hard in zip(rows, hard_only):
        assert row["docs"][: len(hard["docs"])] == hard["docs"]  # the hard ones first, unchanged
        extra = row["docs"][len(hard["docs"]):]
        assert len(extra) == 3 and row["labels"][len(hard["docs"]):] == [0, 0, 0]
        assert len(set(row["docs"])) == len(row["docs"])  # no document twice in a list
        query = next(q for q in queries if q.text == row["query"])
        positives = {d for d, g in collection.qrels[query.query_id].items() if g > 0}
        assert all(not text_to_ids[t] & positives for t in extra)
        outside_top100 += sum(not text_to_ids[t] & top100[query.query_id] for t in extra)
    assert outside_top100 > 0.9 * 3 * len(rows)  # drawn from the whole corpus, not from the candidates
    again, _ = mine_hard_negatives(list(reversed(queries)), collection.qrels, candidates, texts, config,
                                   show_progress=False)
    assert sorted(map(str, again)) == sorted(map(str, rows))


def _small_collection():
    """40 short documents over ten topic words (seeded), each with a word of its own so that no two texts are
    equal, and four queries whose qrels mix relevant, judged non-relevant and not-in-the-corpus documents."""
    from retrieval.corpus import Collection
    from retrieval.records import Document, Query

    rng = np.random.default_rng(26)
    topics = ["solar", "panel", "battery", "grid", "wind", "turbine", "storage", "inverter", "voltage", "charge"]
    documents = [Document(f"d{i}", f"note {i}", " ".join([*rng.choice(topics, size=int(rng.integers(2, 7))),
                                                          f"item{i}x"]))
                 for i in range(40)]
    queries = [Query("q1", "solar battery storage"), Query("q2", "wind turbine grid voltage"),
               Query("q3", "inverter panel charge"), Query("q4", "grid storage")]
    qrels = {"q1": {"d3": 1, "d7": 2, "d11": 0, "not-in-corpus": 1}, "q2": {"d5": 1},
             "q3": {"d2": 1, "d8": 3}, "q4": {"d9": 0}}
    return Collection("small", documents, queries, qrels)


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_mined_rows_are_the_judged_positives_and_negatives_from_the_first_stages_window(tmp_path, sampling):
    # What `esrerank mine` writes for a small collection with known qrels, read back from disk, against
    # the in-memory BM25's own search results: positives are exactly the qrels' relevant documents in the
    # corpus; hard negatives come from the window (positions range_min..range_max of the candidates once
    # positives are removed), the first ones (top) or a seeded sample (random); random negatives are other
    # corpus documents; nothing judged relevant is ever a negative.
    import datasets

    from pipelines.mining import mine_collection

    collection = _small_collection()
    texts = collection.texts()
    assert len(set(texts.values())) == len(texts)  # a row's texts name their documents
    ids_of = {text: doc_id for doc_id, text in texts.items()}
    index = InMemoryBM25(collection.documents)
    config = MiningConfig(retrieve_k=15, range_min=2, range_max=10, num_negatives=4, num_random_negatives=2,
                          sampling=sampling, seed=9)
    report = mine_collection(collection, index, tmp_path / "mined", config, dev_queries=0)
    rows = datasets.load_from_disk(str(tmp_path / "mined")).to_list()
    assert report.summary["skipped"] == {"no judged positive in the corpus": 1}  # q4: judged, none relevant
    assert [row["query"] for row in rows] == ["solar battery storage", "wind turbine grid voltage",
                                              "inverter panel charge"]
    relevant = {"q1": {"d3", "d7"}, "q2": {"d5"}, "q3": {"d2", "d8"}}  # grade > 0 and in the corpus
    windows = {}
    for query, row in zip(collection.queries, rows):
        docs = [ids_of[text] for text in row["docs"]]
        positives = {d for d, label in zip(docs, row["labels"]) if label == 1}
        assert positives == relevant[query.query_id]
        assert row["labels"] == [1] * len(positives) + [0] * (len(docs) - len(positives))  # positives first
        hits = index.search(query.text, config.retrieve_k)  # the first stage's own answer
        assert len(hits) == config.retrieve_k
        window = [h.doc_id for h in hits if h.doc_id not in positives][2:10]
        windows[query.query_id] = window
        hard, easy = docs[len(positives):len(positives) + 4], docs[len(positives) + 4:]
        if sampling == "top":
            assert hard == window[:4]
        else:
            assert set(hard) <= set(window) and len(set(hard)) == 4
        assert len(easy) == 2 and len(set(docs)) == len(docs)  # no document twice in a list
        assert set(easy) <= set(texts) and not set(easy) & set(hard)
        judged_relevant = {d for d, grade in collection.qrels[query.query_id].items() if grade > 0}
        assert not set(hard + easy) & judged_relevant
    if sampling == "random":  # a sample, not the window's head, for at least one query
        assert any([ids_of[t] for t in row["docs"][len(relevant[q.query_id]):][:4]] != windows[q.query_id][:4]
                   for q, row in zip(collection.queries, rows))
    # seeded: the same seed gives the same bytes whatever the query order, another seed another sample
    reordered = _small_collection()
    reordered.queries.reverse()
    mine_collection(reordered, index, tmp_path / "again", config, dev_queries=0)
    again = datasets.load_from_disk(str(tmp_path / "again")).to_list()
    assert sorted(map(str, again)) == sorted(map(str, rows))
    from dataclasses import replace

    mine_collection(collection, index, tmp_path / "other", replace(config, seed=10), dev_queries=0)
    assert datasets.load_from_disk(str(tmp_path / "other")).to_list() != rows

"""``esrerank index``: bulk-load a corpus into Elasticsearch/OpenSearch."""

from __future__ import annotations

from pathlib import Path

from .options import (
    add_engine_connection_args,
    add_first_stage_args,
    engine_connection_from,
    non_negative_int,
    positive_int,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("index", parents=[common], allow_abbrev=False,
                                 help="bulk-load a corpus into Elasticsearch/OpenSearch")
    parser.add_argument("--data", required=True,
                        help="BEIR folder, MS MARCO collection.tsv, or 'msmarco-passage' (HF datasets copy)")
    parser.add_argument("--engine", choices=["elasticsearch", "opensearch"], default="elasticsearch")
    add_engine_connection_args(parser)
    parser.add_argument("--sniff", action="store_true",
                        help="learn the cluster's other nodes from the one given, and fail over to them")
    parser.add_argument("--index", required=True, help="alias to build; the data goes to a versioned index behind it")
    add_first_stage_args(parser)
    parser.add_argument("--analysis", choices=["auto", "native", "client"], default="auto",
                        help="analyze on the server (native) or with esrerank's replica (client); "
                        "auto: native when the server has the analyzer")
    parser.add_argument("--batch-docs", type=positive_int, default=1000,
                        help="documents per bulk request (default 1000)")
    parser.add_argument("--workers", type=positive_int, default=2, help="concurrent bulk requests (default 2)")
    parser.add_argument("--shards", type=positive_int, default=1,
                        help="primary shards (default 1; with more, searches use dfs_query_then_fetch "
                             "for exact BM25 statistics)")
    parser.add_argument("--replicas", type=non_negative_int, default=0, help="replicas once loaded (default 0)")
    parser.add_argument("--dead-letter", help="JSON-lines file for what could not be indexed "
                        "(default <index>.dead-letter.jsonl)")
    parser.add_argument("--max-retries", type=non_negative_int, default=8,
                        help="retries of 429/5xx/unreachable (default 8)")
    parser.add_argument("--no-force-merge", action="store_true", help="skip the final merge to one segment")
    parser.add_argument("--keep-old", action="store_true", help="keep the index the alias pointed to before")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.corpus import open_corpus
    from retrieval.engine_admin import IndexConfig
    from retrieval.engines import connect
    from retrieval.indexing import Backoff, DeadLetters, build_index

    corpus = open_corpus(args.data)
    dead_letter = Path(args.dead_letter or f"{args.index}.dead-letter.jsonl")
    engine = connect(args.engine, engine_connection_from(args), args.index, sniff=args.sniff)
    settings = IndexConfig(k1=args.k1, b=args.b, analyzer=args.analyzer, analysis=args.analysis,
                             shards=args.shards, replicas=args.replicas)
    try:
        report = build_index(engine, corpus.documents, args.index, corpus.corpus_id, settings,
                             batch_docs=args.batch_docs, workers=args.workers, dead_letter=dead_letter,
                             backoff=Backoff(args.max_retries), total=corpus.total, force_merge=not args.no_force_merge,
                             keep_old=args.keep_old, show_progress=not args.quiet)
    finally:
        letters = DeadLetters(dead_letter)
        for path, line, problem in corpus.skipped.entries:
            letters.write({"file": path, "line": line, "problem": problem})
    skipped = len(corpus.skipped)
    print(f"indexed {report.indexed} documents into {report.index} (alias {report.alias}) in {report.seconds:.1f} s "
          f"({report.docs_per_second:.0f} docs/s); resumed after {report.resumed_after}; "
          f"{report.failed} failed, {skipped} malformed lines skipped; {report.count_in_index} in the index")
    if report.failed or skipped:
        print(f"see {dead_letter} for what was not indexed and why")
    return 0

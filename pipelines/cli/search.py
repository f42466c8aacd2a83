"""``esrerank search``: retrieve (and rerank) for ad-hoc queries."""

from __future__ import annotations

from retrieval.records import DataError

from .options import (
    add_first_stage_args,
    add_reranker_args,
    add_retriever_args,
    add_search_pipeline_arg,
    any_split,
    first_stage_from,
    logger,
    non_negative_int,
    positive_int,
    reranker_from,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("search", parents=[common], allow_abbrev=False,
                                 help="retrieve (and rerank) for ad-hoc queries")
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="query text (several allowed)")
    parser.add_argument("--data", help="BEIR folder for the in-memory retriever")
    add_retriever_args(parser)
    add_first_stage_args(parser)
    add_reranker_args(parser, "none")
    add_search_pipeline_arg(parser)
    parser.add_argument("-k", "--k", type=positive_int, default=10, help="results per query (default 10)")
    parser.add_argument("--rerank-k", type=non_negative_int, default=100,
                        help="candidates reranked per query (default 100)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.records import Query

    from ..retrieve_rerank import RetrieveRerank

    documents = None
    if args.retriever == "memory":
        from retrieval.corpus import load_collection

        if not args.data:
            raise DataError("--data", "the in-memory retriever needs --data DIR")
        documents = load_collection(args.data, any_split(args.data), args.data_dir).documents
    retriever, source = first_stage_from(args, documents)
    reranker = reranker_from(args)
    pipeline = RetrieveRerank(retriever, reranker, retrieve_k=max(args.k, args.rerank_k if reranker else args.k),
                              rerank_k=args.rerank_k)
    queries = [Query(str(i), text) for i, text in enumerate(args.queries, start=1)]
    run = pipeline.run(queries, show_progress=False)
    logger.info("first stage: %s%s", source, f"; reranker {reranker!r}" if reranker else "")
    for query in queries:
        hits = run[query.query_id][: args.k]
        texts = retriever.fetch_texts([h.doc_id for h in hits]) if hits else []
        print(f"query {query.query_id}: {query.text}")
        for hit, text in zip(hits, texts):
            print(f"  {hit.rank:>3}  {hit.score:>10.4f}  {hit.doc_id:<12} {text[:90]!s}")
    return 0

"""``esrerank search``: retrieve (and rerank) for ad-hoc queries."""

from __future__ import annotations

from esrerank_errors import DataError

from .options import (
    add_first_stage_args,
    add_rerank_k_arg,
    add_reranker_args,
    add_rescore_arg,
    add_retriever_args,
    add_search_pipeline_arg,
    any_split,
    first_stage_from,
    logger,
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
    add_rescore_arg(parser)
    parser.add_argument("-k", "--k", type=positive_int, default=10, help="results per query (default 10)")
    add_rerank_k_arg(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.records import Query

    from ..retrieve_rerank import RerankConfig, first_stage_run, rerank_run

    documents = None
    if args.retriever == "memory":
        from retrieval.corpus import load_collection

        if not args.data:
            raise DataError("--data", "the in-memory retriever needs --data DIR")
        documents = load_collection(args.data, any_split(args.data), args.data_dir).documents
    retriever, source = first_stage_from(args, documents)
    reranker = reranker_from(args)
    queries = [Query(str(i), text) for i, text in enumerate(args.queries, start=1)]
    first_stage = first_stage_run(retriever, queries, max(args.k, args.rerank_k if reranker else args.k))
    # the texts of every document that is reranked or shown, fetched once: the reranker and the listing share them
    shown = args.rerank_k if reranker else 0
    doc_ids = list(dict.fromkeys(h.doc_id for hits in first_stage.values() for h in hits[:max(args.k, shown)]))
    texts = dict(zip(doc_ids, retriever.fetch_texts(doc_ids))) if doc_ids else {}
    run = rerank_run(queries, first_stage, reranker, texts, RerankConfig(rerank_k=args.rerank_k), show_progress=False)
    logger.info("first stage: %s%s", source, f"; reranker {reranker!r}" if reranker else "")
    for query in queries:
        print(f"query {query.query_id}: {query.text}")
        for hit in run[query.query_id][: args.k]:
            print(f"  {hit.rank:>3}  {hit.score:>10.4f}  {hit.doc_id:<12} {texts[hit.doc_id][:90]!s}")
    return 0

"""``esrerank evaluate``: BM25 vs reranked effectiveness on a test collection."""

from __future__ import annotations

import json
import time
from pathlib import Path

from esrerank_errors import DataError
from rerank import DEFAULT_MODEL

from ..retrieve_rerank import EVALUATE_RETRIEVE_K, RerankConfig
from .options import (
    add_first_stage_args,
    add_ray_args,
    add_rerank_k_arg,
    add_reranker_args,
    add_rescore_arg,
    add_retriever_args,
    add_search_pipeline_arg,
    first_stage_from,
    fraction,
    logger,
    model_options_from,
    output_file,
    positive_int,
    ray_config_from,
    read_query_ids,
    reranker_from,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("evaluate", parents=[common], allow_abbrev=False,
                                 help="BM25 vs reranked effectiveness on a test collection")
    parser.add_argument("--data", default=None,
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), a collection name found in a data "
                        "folder or fetched by ir_datasets (vaswani, cranfield, scifact, …), an ir_datasets id "
                        "(msmarco-passage/dev/small, beir/scifact/test, …) or a HF id (default vaswani)")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--query-ids",
                        help="JSON list of query ids to evaluate (e.g. a recipe's heldout_query_ids.json)")
    add_reranker_args(parser, DEFAULT_MODEL)
    parser.add_argument("--retrieve-k", type=positive_int, default=EVALUATE_RETRIEVE_K,
                        help=f"first-stage candidates per query (default {EVALUATE_RETRIEVE_K}, so that the first "
                        "stage's Recall@1000 is measured)")
    add_rerank_k_arg(parser)
    add_first_stage_args(parser)
    add_retriever_args(parser)
    add_search_pipeline_arg(parser)
    add_rescore_arg(parser)
    add_ray_args(parser)
    parser.add_argument("--candidates", help="rerank this first-stage TREC run instead of retrieving")
    parser.add_argument("--fusion", choices=["auto", "none", "interpolate", "rrf"], default="none",
                        help="combine BM25 and reranker scores: none (default: the reranker alone), interpolate, "
                        "rrf, or auto: what 'esrerank recipe' found best for this model (recorded beside it)")
    parser.add_argument("--alpha", type=fraction, default=None,
                        help=f"reranker weight in fusion (default {RerankConfig.alpha}, or the recorded one with auto)")
    parser.add_argument("--save-run", type=output_file,
                        help="write the final run (reranked, or BM25 with --model none) here")
    parser.add_argument("--output-json", type=output_file, help="write the measures as JSON here")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.corpus import load_collection

    from ..evaluation import FIRST_STAGE, format_single, format_table
    from ..experiment import evaluate, select_queries
    from ..runs import read_trec_run, write_trec_run

    started = time.perf_counter()
    ray_config = ray_config_from(args)
    # first: a bad model should fail before minutes of retrieval (on Ray, the actors load it, below)
    reranker = None if ray_config else reranker_from(args)
    collection = select_queries(load_collection(args.data, args.split, args.data_dir), read_query_ids(args.query_ids),
                                args.query_ids or "query ids")
    logger.info("%s: %d documents, %d judged queries (split %s)", collection.name, len(collection.documents),
                len(collection.queries), args.split)
    retriever, candidates = None, None
    if args.candidates:
        candidates, source = read_trec_run(args.candidates, k=args.retrieve_k), f"candidates from {args.candidates}"
    else:
        retriever, source = first_stage_from(args, collection.documents)
    logger.info("first stage: %s", source)
    queries_per_batch = RerankConfig.queries_per_batch
    if ray_config:
        from ..ray_rerank import RayPool, RayReranker

        if args.search_pipeline or args.rescore or args.model.lower() == "none":
            raise DataError("--ray", "--ray scores with --model on a Ray cluster; it cannot be combined with "
                                     "--search-pipeline, --rescore or --model none")
        # the texts the model reads: an engine index's own (its fields), as without Ray; else the collection's
        texts = retriever.fetch_texts if hasattr(retriever, "fetch_texts") else collection.texts()
        reranker = RayReranker(RayPool(args.model, model_options_from(args), ray_config), texts)
        queries_per_batch = max(1, len(collection.queries))  # every head at once: the pool cuts the chunks
    fusion, alpha = args.fusion, args.alpha if args.alpha is not None else RerankConfig.alpha
    if reranker is not None:
        logger.info("reranker: %r, top %d of %d", reranker, args.rerank_k, args.retrieve_k)
        if fusion == "auto":
            from ..fusion import recorded_fusion

            fusion, recorded_alpha = recorded_fusion(args.model)
            alpha = args.alpha if args.alpha is not None else recorded_alpha
            if fusion:
                logger.info("fusion %s with alpha %.2f, as recorded for this model on its dev split", fusion, alpha)
    rerank = RerankConfig(rerank_k=args.rerank_k, fusion=None if fusion in (None, "none") else fusion, alpha=alpha,
                          queries_per_batch=queries_per_batch)
    result = evaluate(collection, retriever, reranker, retrieve_k=args.retrieve_k, rerank=rerank,
                      candidates=candidates, candidates_source=args.candidates or "candidates",
                      show_progress=not args.quiet)

    print(f"{collection.name} ({args.split}, {len(collection.queries)} queries); first stage: {source}")
    print(format_table(result.comparisons) if reranker is not None else format_single(result.measures[FIRST_STAGE]))
    if args.save_run:
        write_trec_run(result.final, args.save_run, tag="reranked" if reranker is not None else "bm25")
        logger.info("run written to %s", args.save_run)
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result.measures, indent=2) + "\n", encoding="utf-8")
        logger.info("measures written to %s", args.output_json)
    logger.info("done in %.1f s", time.perf_counter() - started)
    return 0

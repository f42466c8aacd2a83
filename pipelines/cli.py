"""The ``esrerank`` command line: a thin layer over the Python API.

Bad input (missing files, malformed lines, unusable models) ends with one ``esrerank: error: …`` line
naming the file, line and problem, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rerank.errors import ModelError
from retrieval.records import DataError

logger = logging.getLogger("esrerank")


def _add_first_stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, Anserini's MS MARCO setting)")
    parser.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, Anserini's MS MARCO setting)")
    parser.add_argument("--analyzer", choices=["english", "standard"], default="english",
                        help="Elasticsearch analyzer to reproduce (default english)")


def _add_reranker_args(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model,
                        help=f"cross-encoder hub id or local folder, or 'none' for BM25 only (default {default_model})")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per (query, passage) pair (default 512)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="number type of the reranker (default auto: bf16 where the hardware is fast at it)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: first available)")


def build_parser() -> argparse.ArgumentParser:
    from rerank import DEFAULT_MODEL

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser = argparse.ArgumentParser(prog="esrerank", description="BM25 retrieval + cross-encoder reranking.",
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", parents=[common],
                                   help="BM25 vs reranked effectiveness on a test collection")
    evaluate.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or HF id")
    evaluate.add_argument("--split", default="test", help="qrels split (default test)")
    _add_reranker_args(evaluate, DEFAULT_MODEL)
    evaluate.add_argument("--retrieve-k", type=int, default=1000, help="first-stage depth (default 1000)")
    evaluate.add_argument("--rerank-k", type=int, default=100, help="candidates reranked per query (default 100)")
    _add_first_stage_args(evaluate)
    evaluate.add_argument("--candidates", help="rerank this first-stage TREC run instead of retrieving")
    evaluate.add_argument("--save-run", help="write the final run (reranked, or BM25 with --model none) here")
    evaluate.add_argument("--output-json", help="write the measures as JSON here")
    evaluate.set_defaults(handler=run_evaluate)
    return parser


def run_evaluate(args) -> int:
    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import load_collection

    from .evaluation import compare, format_single, format_table, mean_scores, per_query_scores
    from .retrieve_rerank import RetrieveRerank
    from .runs import read_trec_run, write_trec_run

    started = time.perf_counter()
    reranker = None
    if args.model.lower() != "none":  # load first: a bad model should fail before minutes of retrieval
        from rerank.cross_encoder import CrossEncoder

        reranker = CrossEncoder(args.model, max_length=args.max_length, device=args.device, dtype=args.dtype)
    collection = load_collection(args.data, args.split)
    logger.info("%s: %d documents, %d judged queries (split %s)", collection.name, len(collection.documents),
                len(collection.queries), args.split)
    texts = {d.doc_id: d.contents for d in collection.documents}
    if args.candidates:
        first_stage = read_trec_run(args.candidates, depth=args.retrieve_k)
        unknown = {h.doc_id for hits in first_stage.values() for h in hits if h.doc_id not in texts}
        if unknown:
            raise DataError(args.candidates, f"{len(unknown)} candidate doc ids are not in the corpus "
                                             f"(e.g. {sorted(unknown)[0]!r})")
        first_stage = {q.query_id: first_stage.get(q.query_id, []) for q in collection.queries}
        source = f"candidates from {args.candidates}"
    else:
        index = InMemoryBM25(collection.documents, k1=args.k1, b=args.b, analyzer=args.analyzer)
        first_stage = dict(zip((q.query_id for q in collection.queries),
                               index.search_many([q.text for q in collection.queries], args.retrieve_k)))
        source = f"in-memory BM25 (k1={args.k1}, b={args.b}, analyzer={args.analyzer})"
    logger.info("first stage: %s", source)
    bm25_scores = per_query_scores(first_stage, collection.qrels)
    results = {"bm25": mean_scores(bm25_scores)}

    final_run = first_stage
    if reranker is not None:
        logger.info("reranker: %r, top %d of %d", reranker, args.rerank_k, args.retrieve_k)
        pipeline = RetrieveRerank(None, reranker, retrieve_k=args.retrieve_k, rerank_k=args.rerank_k, texts=texts)
        final_run = pipeline.rerank_run(collection.queries, first_stage, show_progress=not args.quiet)
        reranked_scores = per_query_scores(final_run, collection.qrels)
        results["reranked"] = mean_scores(reranked_scores)
        table = format_table(compare(bm25_scores, reranked_scores))
    else:
        table = format_single(results["bm25"])

    print(f"{collection.name} ({args.split}, {len(collection.queries)} queries); first stage: {source}")
    print(table)
    if args.save_run:
        write_trec_run(final_run, args.save_run, tag="reranked" if "reranked" in results else "bm25")
        logger.info("run written to %s", args.save_run)
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        logger.info("measures written to %s", args.output_json)
    logger.info("done in %.1f s", time.perf_counter() - started)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.handler(args)
    except (DataError, ModelError) as error:
        print(f"esrerank: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esrerank: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

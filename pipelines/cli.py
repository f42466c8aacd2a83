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
from retrieval.engines import EngineError
from retrieval.records import DataError

from .engine_rerank import RegistrationError

logger = logging.getLogger("esrerank")


def _add_first_stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, Anserini's MS MARCO setting)")
    parser.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, Anserini's MS MARCO setting)")
    parser.add_argument("--analyzer", choices=["english", "standard"], default="english",
                        help="Elasticsearch analyzer to reproduce (default english)")


def _add_retriever_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retriever", choices=["memory", "elasticsearch", "opensearch"], default="memory",
                        help="first stage: in-memory BM25 (default) or a real engine")
    parser.add_argument("--url", help="engine URL (default http://127.0.0.1:9200 for elasticsearch, :9201 for opensearch)")
    parser.add_argument("--index", help="engine index or alias (as built by 'esrerank index')")


def _add_search_pipeline_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search-pipeline", metavar="NAME",
                        help="rerank inside OpenSearch through this search pipeline (made by 'esrerank register "
                             "opensearch') instead of on this machine; needs --retriever opensearch, and --model "
                             "is not used")


def _engine_url(args) -> str:
    return args.url or ("http://127.0.0.1:9201" if args.retriever == "opensearch" or
                        getattr(args, "engine", None) == "opensearch" else "http://127.0.0.1:9200")


def _add_reranker_args(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model,
                        help=f"cross-encoder hub id or local folder, or 'none' for BM25 only (default {default_model})")
    _add_model_run_args(parser)


def _add_model_run_args(parser: argparse.ArgumentParser) -> None:
    """How the cross-encoder runs: the same options for evaluate, search and serve."""
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per (query, passage) pair (default: what the model was trained with, "
                             "saved beside it by 'esrerank train', else 512)")
    parser.add_argument("--passages", choices=["first", "maxp"], default=None,
                        help="long documents: their start (first) or their best overlapping window (maxp); "
                             "default: the model's saved setting, else first")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="number type of the reranker (default auto: bf16 where the hardware is fast at it)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: first available)")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"],
                        help="torch (default), or ONNX Runtime on CPU in float32 or int8 (the onnx extra)")


def _cross_encoder(args):
    """The cross-encoder the options of ``_add_model_run_args`` describe."""
    from rerank.cross_encoder import CrossEncoder

    return CrossEncoder(args.model, max_length=args.max_length, device=args.device, dtype=args.dtype,
                        runtime=args.runtime, passages=args.passages)


def build_parser() -> argparse.ArgumentParser:
    from rerank import DEFAULT_MODEL

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser = argparse.ArgumentParser(prog="esrerank", description="BM25 retrieval + cross-encoder reranking.",
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", parents=[common], allow_abbrev=False,
                                   help="BM25 vs reranked effectiveness on a test collection")
    evaluate.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or HF id")
    evaluate.add_argument("--split", default="test", help="qrels split (default test)")
    evaluate.add_argument("--query-ids", help="JSON list of query ids to evaluate (e.g. a recipe's dev_query_ids.json)")
    _add_reranker_args(evaluate, DEFAULT_MODEL)
    evaluate.add_argument("--retrieve-k", type=int, default=1000, help="first-stage depth (default 1000)")
    evaluate.add_argument("--rerank-k", type=int, default=100, help="candidates reranked per query (default 100)")
    _add_first_stage_args(evaluate)
    _add_retriever_args(evaluate)
    _add_search_pipeline_arg(evaluate)
    evaluate.add_argument("--candidates", help="rerank this first-stage TREC run instead of retrieving")
    evaluate.add_argument("--fusion", choices=["auto", "none", "interpolate", "rrf"], default="none",
                          help="combine BM25 and reranker scores: none (default: the reranker alone), interpolate, "
                               "rrf, or auto: what 'esrerank recipe' found best for this model (recorded beside it)")
    evaluate.add_argument("--alpha", type=float, default=None, help="reranker weight in fusion (default 0.5)")
    evaluate.add_argument("--save-run", help="write the final run (reranked, or BM25 with --model none) here")
    evaluate.add_argument("--output-json", help="write the measures as JSON here")
    evaluate.set_defaults(handler=run_evaluate)

    search = commands.add_parser("search", parents=[common], allow_abbrev=False, help="retrieve (and rerank) for ad-hoc queries")
    search.add_argument("queries", nargs="+", metavar="QUERY", help="query text (several allowed)")
    search.add_argument("--data", help="BEIR folder for the in-memory retriever")
    _add_retriever_args(search)
    _add_first_stage_args(search)
    _add_reranker_args(search, "none")
    _add_search_pipeline_arg(search)
    search.add_argument("-k", "--k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--rerank-k", type=int, default=100, help="candidates reranked per query (default 100)")
    search.set_defaults(handler=run_search)

    index = commands.add_parser("index", parents=[common], allow_abbrev=False, help="bulk-load a corpus into Elasticsearch/OpenSearch")
    index.add_argument("--data", required=True,
                       help="BEIR folder, MS MARCO collection.tsv, or 'msmarco-passage' (HF datasets copy)")
    index.add_argument("--engine", choices=["elasticsearch", "opensearch"], default="elasticsearch")
    index.add_argument("--url", help="engine URL (default http://127.0.0.1:9200, or :9201 for opensearch)")
    index.add_argument("--index", required=True, help="alias to build; the data goes to a versioned index behind it")
    _add_first_stage_args(index)
    index.add_argument("--analysis", choices=["auto", "native", "client"], default="auto",
                       help="analyze on the server (native) or with esrerank's replica (client); "
                            "auto: native when the server has the analyzer")
    index.add_argument("--batch-docs", type=int, default=1000, help="documents per bulk request (default 1000)")
    index.add_argument("--workers", type=int, default=2, help="concurrent bulk requests (default 2)")
    index.add_argument("--shards", type=int, default=1, help="primary shards (default 1: exact BM25 statistics)")
    index.add_argument("--replicas", type=int, default=0, help="replicas once loaded (default 0)")
    index.add_argument("--dead-letter", help="JSON-lines file for what could not be indexed "
                                             "(default <index>.dead-letter.jsonl)")
    index.add_argument("--max-retries", type=int, default=8, help="retries of 429/5xx/unreachable (default 8)")
    index.add_argument("--no-force-merge", action="store_true", help="skip the final merge to one segment")
    index.add_argument("--keep-old", action="store_true", help="keep the index the alias pointed to before")
    index.set_defaults(handler=run_index)

    mine = commands.add_parser("mine", parents=[common], allow_abbrev=False, help="hard negatives from the first stage, for training")
    mine.add_argument("--data", required=True, help="BEIR folder with the training queries and qrels")
    mine.add_argument("--split", default="train", help="qrels split (default train)")
    mine.add_argument("--out", required=True, help="output folder (a HF datasets dataset, stats.json)")
    _add_retriever_args(mine)
    _add_first_stage_args(mine)
    mine.add_argument("--depth", type=int, default=100, help="candidates per query (default 100)")
    mine.add_argument("--range-min", type=int, default=0, help="first window position, positives removed (default 0)")
    mine.add_argument("--range-max", type=int, default=100, help="end of the window, exclusive (default 100)")
    mine.add_argument("--num-negatives", type=int, default=6, help="hard negatives per query (default 6)")
    mine.add_argument("--num-random-negatives", type=int, default=3,
                      help="easy negatives per query, drawn at random from the corpus (default 3)")
    mine.add_argument("--sampling", choices=["top", "random"], default="top")
    mine.add_argument("--teacher", help="model that filters likely false negatives: a cross-encoder, or a "
                                        "sentence-transformers bi-encoder (cosine similarity)")
    mine.add_argument("--teacher-type", choices=["auto", "cross-encoder", "bi-encoder"], default="auto",
                      help="auto (default): a one-label sequence classifier is a cross-encoder, else a bi-encoder")
    margin = mine.add_mutually_exclusive_group()
    margin.add_argument("--absolute-margin", type=float, help="drop negatives scoring above positive - X")
    margin.add_argument("--relative-margin", type=float, help="drop negatives scoring above positive x (1 - X)")
    mine.add_argument("--format", choices=["labeled-list", "triplet", "n-tuple", "labeled-pair"], default="labeled-list")
    mine.add_argument("--seed", type=int, default=12)
    mine.add_argument("--exclude-queries", help="JSON list of query ids to leave out (e.g. a test split)")
    mine.add_argument("--dev-queries", type=int, default=None,
                      help="queries held out of training as the dev split 'esrerank train' evaluates on, stops "
                           "early on and picks its checkpoint by (default: min(100, a fifth of the queries); 0: none)")
    mine.add_argument("--dev-depth", type=int, default=30,
                      help="first-stage candidates per dev query reranked during training (default 30)")
    mine.set_defaults(handler=run_mine)

    train = commands.add_parser("train", parents=[common], allow_abbrev=False, help="train a cross-encoder on mined data")
    train.add_argument("--dataset", required=True, help="folder written by 'esrerank mine' (labeled-list)")
    train.add_argument("--base-model", required=True, help="hub id or local folder; a base encoder gets a new head")
    train.add_argument("--out", required=True, help="where the trained model goes")
    _add_training_args(train)
    train.add_argument("--eval-data", help="BEIR folder whose queries evaluate the pipeline during training "
                                           "(default: the dev split 'esrerank mine' held out, when there is one)")
    train.add_argument("--eval-split", default="test")
    train.add_argument("--eval-queries", help="JSON list of query ids to evaluate on (default: all of the split)")
    train.add_argument("--eval-depth", type=int, default=30, help="BM25 candidates per dev query (default 30)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.set_defaults(handler=run_train)

    recipe = commands.add_parser("recipe", parents=[common], allow_abbrev=False, help="mine, train and evaluate in one command")
    recipe.add_argument("--train-data", required=True)
    recipe.add_argument("--train-split", default="train")
    recipe.add_argument("--eval-data", required=True)
    recipe.add_argument("--eval-split", default=None, help="default: --train-split when the data is the same")
    recipe.add_argument("--base-model", required=True)
    recipe.add_argument("--out", required=True)
    recipe.add_argument("--dev-queries", type=int, default=200,
                        help="evaluation queries held out of training when train and eval data are the same "
                             "(default 200)")
    recipe.add_argument("--num-negatives", type=int, default=6, help="hard negatives per query (default 6)")
    recipe.add_argument("--num-random-negatives", type=int, default=3,
                        help="easy negatives per query, at random from the corpus (default 3)")
    recipe.add_argument("--depth", type=int, default=100)
    recipe.add_argument("--train-eval-queries", type=int, default=100,
                        help="dev queries held out of the training queries for training's evaluations (default 100)")
    recipe.add_argument("--train-eval-depth", type=int, default=30)
    _add_training_args(recipe)
    _add_first_stage_args(recipe)
    recipe.add_argument("--resume", action="store_true")
    recipe.set_defaults(handler=run_recipe)

    serve = commands.add_parser("serve", parents=[common], allow_abbrev=False, help="rerank over HTTP (Cohere/Jina and TEI APIs)")
    serve.add_argument("--model", default=DEFAULT_MODEL, help=f"cross-encoder hub id or folder (default {DEFAULT_MODEL})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--max-batch-tokens", type=int, default=65_536,
                       help="gather queued requests up to about this many tokens per model call (default 65,536)")
    serve.add_argument("--max-docs", type=int, default=1000, help="documents per request (default 1,000)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="longest a request waits for others to batch with (default 5; 0 turns batching off)")
    serve.add_argument("--api-key-file", help="file holding the API key requests must send as 'Authorization: "
                                              "Bearer <key>' (default: $ESRERANK_API_KEY, else no key). Never "
                                              "on the command line, where other users of the machine see it")
    _add_model_run_args(serve)
    serve.set_defaults(handler=run_serve)

    register = commands.add_parser("register", parents=[common], allow_abbrev=False,
                                   help="make the engine call 'esrerank serve' itself (rerank inside the engine)")
    register.add_argument("engine", choices=["opensearch", "elasticsearch"])
    register.add_argument("--url", help="engine URL (default http://127.0.0.1:9200, or :9201 for opensearch)")
    register.add_argument("--service-url", required=True,
                          help="where the engine reaches 'esrerank serve', e.g. http://reranker:8080")
    register.add_argument("--name", default="esrerank",
                          help="connector, model and search pipeline name (OpenSearch) or inference endpoint id "
                               "(Elasticsearch); default esrerank")
    register.add_argument("--rerank-fields", default="text",
                          help="comma-separated _source fields sent to the reranker (OpenSearch joins several with "
                               "no separator; default text)")
    register.add_argument("--api-key-file", help="the service's API key, for the engine to send "
                                                 "(default: $ESRERANK_API_KEY, else none)")
    register.add_argument("--timeout-s", type=int, default=30,
                          help="OpenSearch's connect and read timeout for the service (default 30)")
    register.add_argument("--fallback-to-bm25", action="store_true",
                          help="OpenSearch: when the service fails, return the BM25 order instead of an error")
    register.set_defaults(handler=run_register)
    return parser


def _add_training_args(parser: argparse.ArgumentParser) -> None:
    from rerank.training_config import LAMBDA_SCHEMES, LOSSES, TRAIN_PASSAGES, TrainingConfig

    defaults = TrainingConfig()
    parser.add_argument("--loss", choices=LOSSES, default=defaults.loss, help=f"(default {defaults.loss})")
    parser.add_argument("--lambda-scheme", choices=LAMBDA_SCHEMES, default=defaults.lambda_scheme)
    parser.add_argument("--epochs", type=float, default=defaults.epochs, help=f"(default {defaults.epochs:g})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"queries per step; pairs per step with --loss bce (default {defaults.batch_size})")
    parser.add_argument("--mini-batch-size", type=int, default=defaults.mini_batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"(default {defaults.lr:g})")
    parser.add_argument("--max-length", type=int, default=defaults.max_length,
                        help=f"tokens per pair, saved with the model (default {defaults.max_length})")
    parser.add_argument("--passages", choices=TRAIN_PASSAGES, default=defaults.passages,
                        help="long documents: train on their start (first), or on their window sharing most words "
                             f"with the query and rerank by best window (maxp) (default {defaults.passages})")
    parser.add_argument("--eval-steps", type=int, default=None, help="dev evaluations every N steps (default 4 an epoch)")
    parser.add_argument("--early-stopping", type=int, default=defaults.early_stopping_patience, metavar="N",
                        help="stop after N dev evaluations without improvement; 0: never "
                             f"(default {defaults.early_stopping_patience})")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default=defaults.bf16)
    parser.add_argument("--train-seed", type=int, default=defaults.seed)


def _training_config(args):
    from rerank.training_config import TrainingConfig

    return TrainingConfig(loss=args.loss, lambda_scheme=args.lambda_scheme, epochs=args.epochs,
                          batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, lr=args.lr,
                          max_length=args.max_length, passages=args.passages, eval_steps=args.eval_steps,
                          early_stopping_patience=args.early_stopping or None, bf16=args.bf16, seed=args.train_seed)


def _query_ids(path: str | None) -> set[str] | None:
    if not path:
        return None
    try:
        return set(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"expected a JSON list of query ids ({exc})") from None


def run_mine(args) -> int:
    from retrieval.corpus import load_collection

    from .mining import MiningConfig, dev_samples, mine_hard_negatives, save_dev_samples, save_mined, split_queries
    from .retrieve_rerank import first_stage_run

    collection = load_collection(args.data, args.split)
    excluded = _query_ids(args.exclude_queries) or set()
    queries = [q for q in collection.queries if q.query_id not in excluded]
    config = MiningConfig(depth=args.depth, range_min=args.range_min, range_max=args.range_max,
                          num_negatives=args.num_negatives, num_random_negatives=args.num_random_negatives,
                          sampling=args.sampling, absolute_margin=args.absolute_margin,
                          relative_margin=args.relative_margin, output_format=args.format, seed=args.seed)
    teacher = _teacher(args.teacher, args.teacher_type) if args.teacher else None
    dev_size = min(100, len(queries) // 5) if args.dev_queries is None else args.dev_queries
    dev_queries: list = []
    if dev_size:
        queries, dev_queries = split_queries(queries, dev_size, args.seed)
    retriever, source = _first_stage(args, collection.documents)
    candidates = first_stage_run(retriever, queries + dev_queries, max(config.depth, args.dev_depth))
    texts = collection.texts()
    rows, stats = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, teacher,
                                      show_progress=not args.quiet)
    save_mined(rows, stats, config, args.out, extra={"first_stage": source, "data": str(args.data),
                                                     "dev_queries": [q.query_id for q in dev_queries]})
    summary = stats.summary()
    print(f"mined {summary['rows']} rows from {summary['kept']} of {summary['queries']} queries into {args.out}")
    if dev_queries:
        samples = dev_samples(dev_queries, collection.qrels, candidates, texts, args.dev_depth)
        path = save_dev_samples(samples, args.out)
        print(f"held out {len(samples)} dev queries (top {args.dev_depth} candidates each) in {path}")
    print(json.dumps(summary, indent=2))
    return 0


def _teacher(model: str, kind: str):
    """The false-negative filter: a cross-encoder, or a bi-encoder scoring by cosine similarity."""
    from rerank.cross_encoder import CrossEncoder

    if kind == "cross-encoder":
        return CrossEncoder(model)
    if kind == "auto":
        try:
            return CrossEncoder(model)
        except ModelError as error:
            if "not a sequence-classification model" not in str(error):
                raise
    from rerank.bi_encoder import BiEncoder

    return BiEncoder(model)


def run_train(args) -> int:
    import datasets

    from rerank.training import train_cross_encoder
    from rerank.training_config import DEV_SAMPLES_FILE

    dataset_dir = Path(args.dataset)
    if not (dataset_dir / "dataset_info.json").is_file():
        raise DataError(dataset_dir, "not a dataset written by 'esrerank mine' (no dataset_info.json)")
    dataset = datasets.load_from_disk(str(dataset_dir))
    if not {"query", "docs", "labels"} <= set(dataset.column_names):
        raise DataError(dataset_dir, f"training needs labeled-list rows (query, docs, labels); has {dataset.column_names}")
    samples = None
    if args.eval_data:
        from retrieval.bm25 import InMemoryBM25
        from retrieval.corpus import load_collection

        from .mining import dev_samples
        from .retrieve_rerank import first_stage_run

        evaluation = load_collection(args.eval_data, args.eval_split)
        wanted = _query_ids(args.eval_queries)
        queries = [q for q in evaluation.queries if wanted is None or q.query_id in wanted]
        index = InMemoryBM25(evaluation.documents)
        texts = evaluation.texts()
        samples = dev_samples(queries, evaluation.qrels, first_stage_run(index, queries, args.eval_depth), texts,
                              args.eval_depth)
    elif (dataset_dir / DEV_SAMPLES_FILE).is_file():
        from .mining import load_dev_samples

        samples = load_dev_samples(dataset_dir / DEV_SAMPLES_FILE)
        logger.info("dev split: %d queries held out by 'esrerank mine' (%s)", len(samples), dataset_dir / DEV_SAMPLES_FILE)
    result = train_cross_encoder(dataset, args.base_model, args.out, _training_config(args), samples, resume=args.resume)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best dev nDCG@10 "
          f"{result.best_dev_ndcg10 if result.best_dev_ndcg10 is not None else 'n/a'}; model saved to {result.out_dir}")
    return 0


def run_recipe(args) -> int:
    from retrieval.corpus import load_collection

    from .mining import MiningConfig
    from .recipe import RecipeConfig
    from .recipe import run_recipe as recipe

    train = load_collection(args.train_data, args.train_split)
    same_data = Path(args.train_data).resolve() == Path(args.eval_data).resolve()
    eval_split = args.eval_split or (args.train_split if same_data else "test")
    evaluation = train if same_data and eval_split == args.train_split else load_collection(args.eval_data, eval_split)
    report = recipe(train, evaluation, args.base_model, args.out, _training_config(args),
                    RecipeConfig(dev_queries=args.dev_queries, depth=args.depth,
                                 train_eval_queries=args.train_eval_queries, train_eval_depth=args.train_eval_depth),
                    MiningConfig(depth=args.depth, range_max=args.depth, num_negatives=args.num_negatives,
                                 num_random_negatives=args.num_random_negatives),
                    k1=args.k1, b=args.b, analyzer=args.analyzer, resume=args.resume)
    result = report["evaluation"]
    bm25, reranked = result["measures"]["bm25"], result["measures"]["reranked"]
    print(f"evaluation queries: {result['queries']}; time: {report['seconds']['total']:.0f} s")
    print(f"{'measure':<9} {'BM25':>9} {'reranked':>9} {'p (paired t)':>13}")
    for measure in ("nDCG@10", "RR@10", "R@100", "AP"):
        print(f"{measure:<9} {bm25[measure]:>9.4f} {reranked[measure]:>9.4f} {result['significance'][measure]:>13.4g}")
    fusion = result["fusion"]
    for name, value, (low, high) in (
            ("BM25", bm25["nDCG@10"], bm25["nDCG@10_ci95"]),
            ("reranker alone", reranked["nDCG@10"], reranked["nDCG@10_ci95"]),
            ("fused (weight by 2-fold CV)", fusion["two_fold_cross_validated_nDCG@10"],
             fusion["two_fold_cross_validated_nDCG@10_ci95"])):
        print(f"nDCG@10 {name:<28} {value:.4f}  95% CI [{low:.4f}, {high:.4f}]")
    print(f"best fusion on these queries: {json.dumps(fusion['best_on_dev'])}")
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0



def _first_stage(args, documents=None):
    """The retriever the flags name, and a line describing it."""
    if args.retriever == "memory":
        from retrieval.bm25 import InMemoryBM25

        if documents is None:
            raise DataError("--data", "the in-memory retriever needs --data DIR")
        index = InMemoryBM25(documents, k1=args.k1, b=args.b, analyzer=args.analyzer)
        return index, f"in-memory BM25 (k1={args.k1}, b={args.b}, analyzer={args.analyzer})"
    from retrieval.engines import connect

    if not args.index:
        raise DataError("--index", f"--retriever {args.retriever} needs --index NAME")
    engine = connect(args.retriever, _engine_url(args), args.index)
    meta = engine.meta
    if meta and (meta.get("k1"), meta.get("b"), meta.get("analyzer")) != (args.k1, args.b, args.analyzer):
        logger.warning("index %s was built with k1=%s, b=%s, analyzer=%s; those apply, not the flags", args.index,
                       meta.get("k1"), meta.get("b"), meta.get("analyzer"))
    described = (f"k1={meta.get('k1')}, b={meta.get('b')}, analyzer={meta.get('analyzer')}, "
                 f"{meta.get('analysis')} analysis" if meta else "an index esrerank did not build")
    return engine, f"{args.retriever} {engine.url}/{args.index} ({described})"


def _reranker(args):
    """The cross-encoder --model names, the engine's search pipeline, or None (BM25 only)."""
    if args.search_pipeline:
        from retrieval.engines import connect

        from .retrieve_rerank import EngineReranker

        if args.retriever != "opensearch" or not args.index:
            raise DataError("--search-pipeline", "reranking inside the engine needs --retriever opensearch --index NAME")
        logger.info("reranking inside OpenSearch through search pipeline %s (--model is not used)", args.search_pipeline)
        return EngineReranker(connect("opensearch", _engine_url(args), args.index, search_pipeline=args.search_pipeline))
    if args.model.lower() == "none":
        return None
    return _cross_encoder(args)


def run_register(args) -> int:
    from retrieval.engines import rest_client

    from .engine_rerank import register_elasticsearch, register_opensearch

    api_key = read_api_key(args.api_key_file)
    url = args.url or ("http://127.0.0.1:9201" if args.engine == "opensearch" else "http://127.0.0.1:9200")
    rest = rest_client(args.engine, url)
    if args.engine == "opensearch":
        fields = [field.strip() for field in args.rerank_fields.split(",") if field.strip()]
        if not fields:
            raise DataError("--rerank-fields", "name at least one _source field")
        registration = register_opensearch(rest, args.service_url, args.name, fields, api_key=api_key,
                                           timeout_s=args.timeout_s, ignore_failure=args.fallback_to_bm25)
        print(registration.as_json())
    else:
        answer = register_elasticsearch(rest, args.service_url, args.name, api_key=api_key)
        print(json.dumps({"inference_id": answer.get("inference_id", args.name), "task_type": answer.get("task_type")}))
    return 0


def run_evaluate(args) -> int:
    from retrieval.corpus import load_collection

    from .evaluation import compare, format_single, format_table, mean_scores, per_query_scores
    from .retrieve_rerank import RetrieveRerank, first_stage_run
    from .runs import read_trec_run, write_trec_run

    started = time.perf_counter()
    reranker = _reranker(args)  # first: a bad model should fail before minutes of retrieval
    collection = load_collection(args.data, args.split)
    wanted = _query_ids(args.query_ids)
    if wanted is not None:
        unknown = wanted - {q.query_id for q in collection.queries}
        if unknown:
            raise DataError(args.query_ids, f"{len(unknown)} query ids are not judged queries of the split "
                                            f"(e.g. {sorted(unknown)[0]!r})")
        collection.queries = [q for q in collection.queries if q.query_id in wanted]
        collection.qrels = {q: j for q, j in collection.qrels.items() if q in wanted}
    logger.info("%s: %d documents, %d judged queries (split %s)", collection.name, len(collection.documents),
                len(collection.queries), args.split)
    texts = collection.texts()
    if args.candidates:
        first_stage = read_trec_run(args.candidates, depth=args.retrieve_k)
        unknown = {h.doc_id for hits in first_stage.values() for h in hits if h.doc_id not in texts}
        if unknown:
            raise DataError(args.candidates, f"{len(unknown)} candidate doc ids are not in the corpus "
                                             f"(e.g. {sorted(unknown)[0]!r})")
        first_stage = {q.query_id: first_stage.get(q.query_id, []) for q in collection.queries}
        source = f"candidates from {args.candidates}"
    else:
        retriever, source = _first_stage(args, collection.documents)
        first_stage = first_stage_run(retriever, collection.queries, args.retrieve_k)
    logger.info("first stage: %s", source)
    bm25_scores = per_query_scores(first_stage, collection.qrels)
    results = {"bm25": mean_scores(bm25_scores)}

    final_run = first_stage
    if reranker is not None:
        logger.info("reranker: %r, top %d of %d", reranker, args.rerank_k, args.retrieve_k)
        fusion, alpha = args.fusion, args.alpha if args.alpha is not None else 0.5
        if fusion == "auto":
            from .recipe import recorded_fusion

            fusion, recorded_alpha = recorded_fusion(args.model)
            alpha = args.alpha if args.alpha is not None else recorded_alpha
            if fusion:
                logger.info("fusion %s with alpha %.2f, as recorded for this model on its dev split", fusion, alpha)
        pipeline = RetrieveRerank(None, reranker, retrieve_k=args.retrieve_k, rerank_k=args.rerank_k, texts=texts,
                                  fusion=None if fusion in (None, "none") else fusion, alpha=alpha)
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


def run_search(args) -> int:
    from retrieval.records import Query

    from .retrieve_rerank import RetrieveRerank

    documents = None
    if args.retriever == "memory":
        from retrieval.corpus import load_collection

        if not args.data:
            raise DataError("--data", "the in-memory retriever needs --data DIR")
        documents = load_collection(args.data, split=_any_split(args.data)).documents
    retriever, source = _first_stage(args, documents)
    reranker = _reranker(args)
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


def _any_split(folder: str) -> str:
    splits = sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))
    return "test" if "test" in splits or not splits else splits[0]


def run_index(args) -> int:
    from retrieval.corpus import SkippedLines, iter_beir_corpus, iter_hf_msmarco_passages, iter_msmarco_collection
    from retrieval.engines import EngineError, IndexSettings, connect
    from retrieval.indexing import Backoff, DeadLetters, IndexingAborted, build_index

    source = Path(args.data)
    skipped = SkippedLines()
    if args.data == "msmarco-passage":
        documents, total, corpus_id = iter_hf_msmarco_passages(), 8_841_823, "hf:Tevatron/msmarco-passage-corpus"
    else:
        path = source / "corpus.jsonl" if source.is_dir() else source
        if not path.is_file():
            raise DataError(path, "corpus not found (give a BEIR folder, a collection.tsv or 'msmarco-passage')")
        reader = iter_msmarco_collection if path.suffix == ".tsv" else iter_beir_corpus
        documents = reader(path, on_error="skip", skipped=skipped)
        with open(path, "rb") as handle:
            total = sum(1 for line in handle if line.strip())
        stat = path.stat()
        corpus_id = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    dead_letter = Path(args.dead_letter or f"{args.index}.dead-letter.jsonl")
    engine = connect(args.engine, _engine_url(args), args.index)
    settings = IndexSettings(k1=args.k1, b=args.b, analyzer=args.analyzer, analysis=args.analysis,
                             shards=args.shards, replicas=args.replicas)
    try:
        report = build_index(engine, documents, args.index, corpus_id, settings, batch_docs=args.batch_docs,
                             workers=args.workers, dead_letter=dead_letter, backoff=Backoff(args.max_retries),
                             total=total, force_merge=not args.no_force_merge, keep_old=args.keep_old,
                             show_progress=not args.quiet)
    except (IndexingAborted, EngineError) as exc:
        print(f"esrerank: error: {exc}", file=sys.stderr)
        return 1
    finally:
        letters = DeadLetters(dead_letter)
        for path, line, problem in skipped.entries:
            letters.write({"file": path, "line": line, "problem": problem})
    print(f"indexed {report.indexed} documents into {report.index} (alias {report.alias}) in {report.seconds:.1f} s "
          f"({report.docs_per_second:.0f} docs/s); resumed after {report.resumed_after}; "
          f"{report.failed} failed, {len(skipped)} malformed lines skipped; {report.count_in_index} in the index")
    if report.failed or len(skipped):
        print(f"see {dead_letter} for what was not indexed and why")
    return 0


def read_api_key(path: str | None, environment_variable: str = "ESRERANK_API_KEY") -> str | None:
    """The API key from a file (its first line) or else the environment; None when neither has one."""
    import os

    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(path, f"cannot read the API key file: {exc.strerror}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise DataError(path, "the API key file is empty")
        return key
    return os.environ.get(environment_variable, "").strip() or None


def run_serve(args) -> int:
    from rerank.service import RerankService, ServiceLimits

    api_key = read_api_key(args.api_key_file)
    model = _cross_encoder(args)
    service = RerankService(model, host=args.host, port=args.port, max_batch_tokens=args.max_batch_tokens,
                            max_wait_ms=args.max_wait_ms, limits=ServiceLimits(max_docs=args.max_docs),
                            model_name=args.model, api_key=api_key)
    print(f"esrerank serving {args.model} on {service.url} (POST /v1/rerank, POST /rerank, GET /health, GET /metrics; "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("elastic_transport", "opensearch", "urllib3", "httpx"):  # one line per HTTP request
        logging.getLogger(noisy).setLevel(logging.ERROR)  # esrerank reports what failed
    try:
        return args.handler(args)
    except (DataError, ModelError) as error:
        print(f"esrerank: error: {error}", file=sys.stderr)
        return 2
    except (RegistrationError, EngineError) as error:  # the engine refused, or is not there
        print(f"esrerank: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esrerank: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

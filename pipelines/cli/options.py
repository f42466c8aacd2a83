"""What several subcommands share: option groups, checked option types, and turning flags into objects."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from esrerank_errors import DataError

logger = logging.getLogger("esrerank")


def _number(kind, low=None, high=None, low_open=False, rule=""):
    """An argparse type: ``kind`` (int or float) within [low, high] (``low_open``: above low), with
    ``rule`` as the message when it is not."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


positive_int = _number(int, 1, rule="a positive integer")
non_negative_int = _number(int, 0, rule="0 or more")
port_number = _number(int, 0, 65535, rule="a port number from 0 to 65535")
# the query budget, separators and a few document tokens need room
max_length_tokens = _number(int, 8, rule="at least 8 tokens")
fraction = _number(float, 0.0, 1.0, rule="between 0 and 1")
non_negative_float = _number(float, 0.0, rule="0 or more")
positive_float = _number(float, 0.0, low_open=True, rule="more than 0")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _checked_output(text: str, folder: bool) -> str:
    path = Path(text)
    try:
        if folder and path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file: give a folder")
        if not folder and path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name")
        holder = _nearest_existing(path.absolute() if folder else path.absolute().parent)
        if not holder.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: {str(holder)!r} is a file, not a folder")
        # the folder, not the file: files beside it (a run's progress journal) are written there too. (For
        # root, os.access allows everything but a read-only file system.)
        if not os.access(holder, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r}: no permission to write in {str(holder)!r}")
    except OSError as error:  # a folder on the way that cannot be read, a name too long
        raise argparse.ArgumentTypeError(f"{text!r}: {error.strerror or error}") from None
    return text


def output_file(text: str) -> str:
    """An argparse type for a file the command writes: refused at once (not after minutes of work) when it
    is a folder, or when the folder that should hold it is a file or cannot be written. Missing folders are
    made when the file is written."""
    return _checked_output(text, folder=False)


def output_folder(text: str) -> str:
    """An argparse type for a folder the command writes into (an existing one is fine: resuming): refused at
    once when it is a file, or when the folder that should hold it is a file or cannot be written."""
    return _checked_output(text, folder=True)


def add_first_stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k1", type=non_negative_float, default=0.9,
                        help="BM25 k1 (default 0.9, Anserini's MS MARCO setting)")
    parser.add_argument("--b", type=fraction, default=0.4, help="BM25 b (default 0.4, Anserini's MS MARCO setting)")
    parser.add_argument("--analyzer", choices=["english", "standard"], default="english",
                        help="Elasticsearch analyzer to reproduce (default english)")


def add_retriever_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retriever", choices=["memory", "elasticsearch", "opensearch"], default="memory",
                        help="first stage: in-memory BM25 (default) or a real engine")
    add_engine_connection_args(parser)
    parser.add_argument("--sniff", action="store_true",
                        help="engine: learn the cluster's other nodes from the one given, and fail over to them")
    parser.add_argument("--index", help="engine index or alias: one 'esrerank index' built, or your own (then "
                        "name how to search it with --fields or --query-template)")
    parser.add_argument("--no-dfs", dest="dfs", action="store_const", const=False, default=None,
                        help="engine: plain query_then_fetch even on several shards (faster, per-shard BM25 "
                             "statistics); by default an index of more than one shard is searched with "
                             "dfs_query_then_fetch, exact BM25")
    add_index_fields_args(parser)


def add_index_fields_args(parser: argparse.ArgumentParser, search: bool = True) -> None:
    """How your own index is searched and read: the same options for every subcommand that uses an index."""
    from retrieval.engine_query import MATCH_TYPES

    if search:
        parser.add_argument("--fields", metavar="F1^B,F2",
                            help="engine: search your index with a multi_match over these fields (boosts as "
                            "field^2), e.g. --fields headline^2,body")
        parser.add_argument("--match-type", choices=MATCH_TYPES, default="best_fields",
                            help="engine: the multi_match type with --fields (default best_fields, the engines' own)")
        parser.add_argument("--query-template", metavar="FILE|ID",
                            help="engine: search your index with your own query: a JSON search body in which "
                            "{{query}} stands for the query text (a file), or the id of a search template stored "
                            "on the engine (params query and size)")
    parser.add_argument("--rerank-fields", metavar="F1,F2",
                        help="engine: the _source fields the reranker reads, joined in this order (dotted paths "
                        "allowed); default: title,text on an index esrerank built, else the --fields searched, "
                        "else the index's text fields, title-like names first")
    parser.add_argument("--id-field", metavar="FIELD",
                        help="engine: the _source field holding the ids your qrels use (default: _id)")


def add_rerank_k_arg(parser: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    from ..retrieve_rerank import RerankConfig

    default = RerankConfig.rerank_k if default is None else default
    parser.add_argument("--rerank-k", type=non_negative_int, default=default,
                        help=help or f"candidates reranked per query, the rest kept in first-stage order "
                        f"(default {default})")


def add_search_pipeline_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search-pipeline", metavar="NAME",
                        help="rerank inside OpenSearch through this search pipeline (made by 'esrerank register "
                        "opensearch') instead of on this machine; needs --retriever opensearch, and --model "
                        "is not used")


def add_rescore_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rescore", metavar="NAME",
                        help="rerank inside Elasticsearch with this rescorer (esrerank: the plugin in "
                        "plugins/elasticsearch, which calls the esrerank service set in elasticsearch.yml) instead "
                        "of on this machine; needs --retriever elasticsearch, and --model is not used")


def add_engine_connection_args(parser: argparse.ArgumentParser) -> None:
    """How to reach the engine: its URL, TLS and credentials, the same flags on every command that talks to one."""
    group = parser.add_argument_group("engine connection (secured clusters)")
    group.add_argument("--url",
                       help="engine URL (default http://127.0.0.1:9200 for elasticsearch, :9201 for opensearch); "
                       "several nodes of a cluster separated by commas. A user:password@ in it works but is "
                       "visible to other users of this machine: prefer --user and --password-file")
    group.add_argument("--ca-certs", metavar="FILE",
                       help="PEM file of the CA that signed the cluster's certificate (Elasticsearch: "
                       "config/certs/http_ca.crt; OpenSearch: root-ca.pem); default: the system's trust store")
    group.add_argument("--client-cert", metavar="FILE", help="PEM client certificate, for clusters that ask for one")
    group.add_argument("--client-key", metavar="FILE", help="PEM key of --client-cert")
    group.add_argument("--insecure", action="store_true",
                       help="do not check the cluster's certificate (warned about on every run; prefer --ca-certs)")
    group.add_argument("--user", metavar="NAME", help="engine user (basic authentication); the password from "
                       "--password-file or $ESRERANK_ENGINE_PASSWORD")
    group.add_argument("--password-file", metavar="FILE",
                       help="file whose first line is the engine user's password (default $ESRERANK_ENGINE_PASSWORD)")
    group.add_argument("--engine-token-file", metavar="FILE",
                       help="file holding a bearer token for the engine, e.g. an Elasticsearch service-account "
                       "token (default $ESRERANK_ENGINE_TOKEN)")
    group.add_argument("--engine-api-key-file", metavar="FILE",
                       help="file holding an Elasticsearch API key, id:key or encoded (default "
                       "$ESRERANK_ENGINE_API_KEY); not the esrerank service's key (--api-key-file)")


CONNECTION_FLAGS = ("url", "ca_certs", "client_cert", "client_key", "insecure", "user", "password_file",
                    "engine_token_file", "engine_api_key_file")


def engine_connection_from(args):
    """The :class:`retrieval.engine_connection.EngineConnection` the flags of ``add_engine_connection_args``
    describe, built once per command (secrets: flags' files first, then the environment)."""
    if getattr(args, "engine_connection", None) is not None:
        return args.engine_connection
    from retrieval.engine_connection import EngineConnection, read_secret_file

    engine = getattr(args, "engine", None) or getattr(args, "retriever", None)
    url = args.url or ("http://127.0.0.1:9201" if engine == "opensearch" else "http://127.0.0.1:9200")
    password = token = api_key = None
    if args.password_file:
        if not args.user:
            raise DataError("--password-file", "a password needs the user's name: give --user NAME")
        password = read_secret_file(args.password_file, "password")
    elif args.user:
        password = os.environ.get("ESRERANK_ENGINE_PASSWORD") or None
    if args.engine_token_file:
        token = read_secret_file(args.engine_token_file, "token")
    if args.engine_api_key_file:
        api_key = read_secret_file(args.engine_api_key_file, "API key")
    if not (args.user or token or api_key or "@" in url):  # nothing given by flags: the environment's
        token = os.environ.get("ESRERANK_ENGINE_TOKEN", "").strip() or None
        api_key = os.environ.get("ESRERANK_ENGINE_API_KEY", "").strip() or None
    args.engine_connection = EngineConnection.from_url(
        url, ca_certs=args.ca_certs, client_cert=args.client_cert, client_key=args.client_key,
        verify_certs=not args.insecure, username=args.user, password=password, bearer_token=token, api_key=api_key)
    return args.engine_connection


def add_reranker_args(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model,
                        help=f"cross-encoder hub id or local folder, or 'none' for BM25 only (default {default_model})")
    add_model_run_args(parser)
    add_score_cache_arg(parser)


def add_score_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-cache", metavar="FILE", type=output_file,
                        help="keep every score in this SQLite file and answer pairs scored before from it (one "
                        "file per model; needs --dtype float32 on a CPU with bf16): a re-run with another fusion "
                        "or a deeper first stage scores only the new pairs")


def add_model_run_args(parser: argparse.ArgumentParser) -> None:
    """How the cross-encoder runs: the same options for evaluate, search and serve."""
    parser.add_argument("--max-length", type=max_length_tokens, default=None,
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


def cross_encoder_from(args, show_progress: bool | None = None, device: str | None = None):
    """The cross-encoder the options of ``add_model_run_args`` describe (``device``: instead of --device)."""
    from rerank.cross_encoder import CrossEncoder

    model = CrossEncoder(args.model, max_length=args.max_length, device=device or args.device, dtype=args.dtype,
                         runtime=args.runtime, passages=args.passages, show_progress=show_progress)
    if getattr(args, "score_cache", None):
        from rerank.score_cache import ScoreCache

        return ScoreCache(args.score_cache, model)
    return model


def model_options_from(args) -> dict:
    """What ``CrossEncoder`` takes besides the model, from ``add_model_run_args``' options (for processes
    that load the model themselves: one per device, or Ray's actors)."""
    return {"max_length": args.max_length, "dtype": args.dtype, "passages": args.passages, "runtime": args.runtime}


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="score on a Ray cluster (the 'ray' extra): --ray alone starts Ray on this machine; "
                        "--ray auto joins the cluster 'ray start' made here; --ray HEAD:6379 or ray://HEAD:10001 "
                        "another one. One actor per GPU, else per --ray-cpus-per-actor CPUs")
    parser.add_argument("--ray-actors", type=positive_int, default=None,
                        help="scoring actors (default: one per GPU of the cluster, else per --ray-cpus-per-actor CPUs)")
    parser.add_argument("--ray-cpus-per-actor", type=positive_int, default=1,
                        help="CPU slots (and torch threads) an actor takes on a CPU-only cluster (default 1)")


def ray_config_from(args):
    """The :class:`pipelines.ray_rerank.RayConfig` of ``add_ray_args``' options, or None without --ray."""
    if not getattr(args, "ray", None):
        return None
    if getattr(args, "score_cache", None):
        raise DataError("--score-cache", "the score cache is read and written by one process: it cannot be "
                                         "combined with --ray")
    from ..ray_rerank import RayConfig, _ray

    _ray()  # without the extra: say how to install it, before anything is loaded
    return RayConfig(address=None if args.ray == "local" else args.ray, actors=args.ray_actors,
                     cpus_per_actor=args.ray_cpus_per_actor)


def add_training_args(parser: argparse.ArgumentParser) -> None:
    from rerank.training_config import LAMBDA_SCHEMES, LOSSES, LR_SCHEDULES, TRAIN_PASSAGES, TrainingConfig

    defaults = TrainingConfig()
    parser.add_argument("--loss", choices=LOSSES, default=None,
                        help=f"(default {defaults.loss}; margin-mse when distilling from a --teacher)")
    parser.add_argument("--lambda-scheme", choices=LAMBDA_SCHEMES, default=defaults.lambda_scheme)
    parser.add_argument("--max-steps", type=positive_int, default=defaults.max_steps,
                        help="the most optimizer updates; early stopping on the dev split normally ends training "
                        f"before (default {defaults.max_steps})")
    parser.add_argument("--epochs", type=positive_float, default=defaults.epochs,
                        help="optional cap in passes over the training queries (default: none, the update budget "
                        "and early stopping decide)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help="queries per step; pairs per step with --loss bce (default: about one per 128 "
                        "training queries, from 2 to 16)")
    parser.add_argument("--mini-batch-size", type=positive_int, default=defaults.mini_batch_size)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help=f"peak (default {defaults.lr:g})")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=defaults.warmup_steps,
                        help=f"linear warmup (default {defaults.warmup_steps})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="after warmup: constant (default; early stopping ends the run), or linear/cosine "
                        "decay to zero at --max-steps")
    parser.add_argument("--train-embeddings", action="store_true",
                        help="train the word-embedding table too (default: kept fixed)")
    parser.add_argument("--max-length", type=max_length_tokens, default=defaults.max_length,
                        help=f"tokens per pair, saved with the model (default {defaults.max_length})")
    parser.add_argument("--passages", choices=TRAIN_PASSAGES, default=defaults.passages,
                        help="long documents: train on their start (first), or on their window sharing most words "
                        f"with the query and rerank by best window (maxp) (default {defaults.passages})")
    parser.add_argument("--eval-steps", type=positive_int, default=None,
                        help="dev evaluations every N steps (default 4 an epoch)")
    parser.add_argument("--early-stopping", type=non_negative_int, default=defaults.early_stopping_patience,
                        metavar="N",
                        help="stop after N dev evaluations without improvement; 0: never "
                        f"(default {defaults.early_stopping_patience})")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default=defaults.bf16)
    parser.add_argument("--train-seed", type=int, default=defaults.seed)


def training_config_from(args):
    from rerank.training_config import TrainingConfig

    return TrainingConfig(loss=args.loss or TrainingConfig.loss, lambda_scheme=args.lambda_scheme,
                          max_steps=args.max_steps,
                          epochs=args.epochs, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                          lr=args.lr, warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule,
                          freeze_embeddings=not args.train_embeddings,
                          max_length=args.max_length, passages=args.passages, eval_steps=args.eval_steps,
                          early_stopping_patience=args.early_stopping or None, bf16=args.bf16, seed=args.train_seed)


def read_query_ids(path: str | None) -> set[str] | None:
    if not path:
        return None
    try:
        return set(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"expected a JSON list of query ids ({exc})") from None


def first_stage_from(args, documents=None):
    """The retriever the flags name, and a line describing it."""
    engine_fields = engine_fields_from(args)  # engine-only flags without an engine are refused here
    if args.retriever == "memory":
        from retrieval.bm25 import InMemoryBM25

        if documents is None:
            raise DataError("--data", "the in-memory retriever needs --data DIR")
        index = InMemoryBM25(documents, k1=args.k1, b=args.b, analyzer=args.analyzer,
                             show_progress=False if getattr(args, "quiet", False) else None)
        return index, f"in-memory BM25 (k1={args.k1}, b={args.b}, analyzer={args.analyzer})"
    from retrieval.engines import connect

    if not args.index:
        raise DataError("--index", f"--retriever {args.retriever} needs --index NAME")
    engine = connect(args.retriever, engine_connection_from(args), args.index, dfs=args.dfs, sniff=args.sniff,
                     **engine_fields)
    engine.check_search()  # before anything else runs: a wrong field or template is one line, at once
    meta = engine.meta
    if meta and (meta.get("k1"), meta.get("b"), meta.get("analyzer")) != (args.k1, args.b, args.analyzer):
        logger.warning("index %s was built with k1=%s, b=%s, analyzer=%s; those apply, not the flags", args.index,
                       meta.get("k1"), meta.get("b"), meta.get("analyzer"))
    described = (f"k1={meta.get('k1')}, b={meta.get('b')}, analyzer={meta.get('analyzer')}, "
                 f"{meta.get('analysis')} analysis" if meta else "your index's own similarity")
    query = engine.query.describe() if engine.query else "match on contents"
    search_type = "dfs_query_then_fetch" if engine.dfs else "query_then_fetch"
    return engine, (f"{args.retriever} {engine.url}/{args.index} ({query}; {described}, {search_type}; reranker "
                    f"reads {','.join(engine.reranked_fields())})")


def engine_fields_from(args) -> dict:
    """The searcher's keyword arguments for the options of ``add_index_fields_args``; without an engine, any
    engine-only option (those and the connection's) is refused."""
    from retrieval.engine_query import parse_fields, query_from_options

    named = {"fields": getattr(args, "fields", None), "query_template": getattr(args, "query_template", None)}
    if getattr(args, "retriever", "memory") == "memory":
        flags = [f"--{name.replace('_', '-')}" for name, value in
                 {**named, "rerank_fields": args.rerank_fields, "id_field": args.id_field,
                  **{name: getattr(args, name, None) for name in CONNECTION_FLAGS}}.items() if value]
        if flags:
            raise DataError(flags[0], f"{flags[0]} is for an engine index: give --retriever elasticsearch|opensearch "
                                      "and --index")
        return {}
    return {"query": query_from_options(named["fields"], named["query_template"], getattr(args, "match_type",
                                                                                             "best_fields")),
            "rerank_fields": parse_fields(args.rerank_fields, "--rerank-fields") if args.rerank_fields else None,
            "id_field": args.id_field}


def reranker_from(args):
    """The cross-encoder --model names, the engine's search pipeline or rescorer, or None (BM25 only)."""
    if getattr(args, "score_cache", None) and (args.search_pipeline or getattr(args, "rescore", None)
                                               or args.model.lower() == "none"):
        raise DataError("--score-cache", "the score cache keeps a cross-encoder's scores on this machine: it cannot "
                                         "be combined with --search-pipeline, --rescore or --model none")
    if getattr(args, "rescore", None):
        from retrieval.engines import connect

        from ..retrieve_rerank import EngineReranker

        if args.search_pipeline:
            raise DataError("--rescore", "give --rescore (Elasticsearch) or --search-pipeline (OpenSearch), not both")
        if args.retriever != "elasticsearch" or not args.index:
            raise DataError("--rescore", "reranking inside Elasticsearch needs --retriever elasticsearch --index NAME")
        logger.info("reranking inside Elasticsearch with the %s rescorer (--model is not used)", args.rescore)
        searcher = connect("elasticsearch", engine_connection_from(args), args.index, rescore=args.rescore,
                           dfs=args.dfs, **engine_fields_from(args))
        return EngineReranker(searcher)
    if args.search_pipeline:
        from retrieval.engines import connect

        from ..retrieve_rerank import EngineReranker

        if args.retriever != "opensearch" or not args.index:
            raise DataError("--search-pipeline",
                            "reranking inside the engine needs --retriever opensearch --index NAME")
        logger.info("reranking inside OpenSearch through search pipeline %s (--model is not used)",
                    args.search_pipeline)
        searcher = connect("opensearch", engine_connection_from(args), args.index, search_pipeline=args.search_pipeline,
                           **engine_fields_from(args))
        return EngineReranker(searcher)
    if args.model.lower() == "none":
        return None
    return cross_encoder_from(args)


def any_split(folder: str) -> str:
    splits = sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))
    return "test" if "test" in splits or not splits else splits[0]


def read_api_key(path: str | None, environment_variable: str = "ESRERANK_API_KEY") -> str | None:
    """The API key from a file (its first line) or else the environment; None when neither has one."""
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


def teacher_from(model: str, kind: str):
    """The false-negative filter: a cross-encoder, or a bi-encoder scoring by cosine similarity."""
    from esrerank_errors import ModelError
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

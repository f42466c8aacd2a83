"""``esrerank rerank``: rerank a large first-stage run file as a resumable batch job."""

from __future__ import annotations

from pathlib import Path

from esrerank_errors import DataError
from rerank.reproducibility import PROMISE

from ..retrieve_rerank import RerankConfig
from .options import (
    add_engine_connection_args,
    add_index_fields_args,
    add_model_run_args,
    add_ray_args,
    add_score_cache_arg,
    cross_encoder_from,
    engine_connection_from,
    engine_fields_from,
    logger,
    model_options_from,
    non_negative_int,
    output_file,
    positive_int,
    ray_config_from,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("rerank", parents=[common], allow_abbrev=False,
                                 help="rerank a first-stage run file, streaming and resumable")
    parser.add_argument("--data", default=None,
                        help="collection with the queries and documents (folder, name or ir_datasets id)")
    parser.add_argument("--split", default="test", help="qrels split whose queries are reranked (default test)")
    parser.add_argument("--candidates", required=True, help="first-stage TREC run to rerank")
    parser.add_argument("--model", required=True, help="cross-encoder hub id or local folder")
    parser.add_argument("--out", required=True, type=output_file,
                        help="reranked TREC run; OUT.progress.jsonl (OUT.chunks/ with --ray) beside it lets a re-run "
                        "resume")
    parser.add_argument("--rerank-k", type=non_negative_int, default=None,
                        help="candidates reranked per query, the rest kept in first-stage order (default: all)")
    parser.add_argument("--queries-per-chunk", type=positive_int, default=RerankConfig.queries_per_batch,
                        help="queries scored in one call and made durable together "
                        f"(default {RerankConfig.queries_per_batch})")
    parser.add_argument("--devices", default="auto",
                        help="auto (default: every GPU, one process each, else the one device), or a list such "
                             "as cuda:0,cuda:1 or cpu")
    parser.add_argument("--retriever", choices=["memory", "elasticsearch", "opensearch"], default="memory",
                        help="where the documents' text comes from: the collection of --data (memory, default) or "
                        "an engine index (the one the run was made from: --index, --rerank-fields, --id-field)")
    add_engine_connection_args(parser)
    parser.add_argument("--index", help="engine index or alias holding the run's documents")
    add_index_fields_args(parser, search=False)
    add_model_run_args(parser)
    add_ray_args(parser)
    add_score_cache_arg(parser)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads of this process (default: torch's, one per core). Reproducibility: "
                        f"{PROMISE}. A --ray job's actors score with --ray-cpus-per-actor threads")
    parser.set_defaults(handler=run)


def _texts(args, collection, candidates) -> dict[str, str]:
    """doc id → text: the collection's, or what the engine index holds in the fields its searcher reads."""
    if args.retriever == "memory":
        engine_fields_from(args)  # engine-only flags without an engine are refused
        return collection.texts()
    from retrieval.engines import connect

    if not args.index:
        raise DataError("--index", f"--retriever {args.retriever} needs --index NAME")
    searcher = connect(args.retriever, engine_connection_from(args), args.index, **engine_fields_from(args))
    searcher.check()
    ids = list(dict.fromkeys(h.doc_id for hits in candidates.values() for h in hits))
    logger.info("reading %d documents' text from %s/%s (%s)", len(ids), searcher.url, args.index,
                ", ".join(searcher.reranked_fields()))
    return dict(zip(ids, searcher.fetch_texts(ids)))


def _devices(spec: str) -> list[str] | None:
    """The devices to run on; None: one device, in this process (the model's default choice)."""
    if spec != "auto":
        devices = [device.strip() for device in spec.split(",") if device.strip()]
        return devices if len(devices) > 1 else None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else None


def run(args) -> int:
    from retrieval.corpus import load_collection

    from ..batch_rerank import rerank_run_file, rerank_run_file_on_devices
    from ..runs import read_trec_run

    ray_config = ray_config_from(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    candidates = read_trec_run(args.candidates)
    collection = load_collection(args.data, args.split, args.data_dir)
    known = {q.query_id: q for q in collection.queries}
    missing = [query_id for query_id in candidates if query_id not in known]
    if missing:
        raise DataError(args.candidates, f"{len(missing)} queries of the run have no text in {collection.name} "
                                         f"({args.split}) (e.g. {missing[0]!r})")
    queries = [known[query_id] for query_id in candidates]
    texts = _texts(args, collection, candidates)
    stat = Path(args.candidates).stat()
    fingerprint = {"candidates": f"{Path(args.candidates).resolve()}:{stat.st_size}:{stat.st_mtime_ns}",
                   "data": [args.data, args.split, getattr(args, "data_dir", None), args.retriever, args.index],
                   "model": args.model, "rerank_k": args.rerank_k, "max_length": args.max_length,
                   "passages": args.passages, "dtype": args.dtype, "runtime": args.runtime}
    options = {"rerank_k": args.rerank_k, "queries_per_chunk": args.queries_per_chunk, "fingerprint": fingerprint,
               "tag": "esrerank"}
    devices = None if ray_config else _devices(args.devices)
    if ray_config:
        from ..ray_rerank import rerank_run_file_on_ray

        report = rerank_run_file_on_ray(queries, candidates, texts, args.model, args.out, model_options_from(args),
                                        ray_config=ray_config, show_progress=not args.quiet, **options)
    elif devices:
        if args.score_cache:
            raise DataError("--score-cache", "the score cache is read and written by one process: give one "
                                             "device with --devices")
        logger.info("reranking on %d devices: %s", len(devices), ", ".join(devices))
        report = rerank_run_file_on_devices(queries, candidates, texts, args.model, devices, args.out,
                                            model_options_from(args), **options)
    else:
        # one device named by --devices (e.g. cpu) is --device's
        device = args.devices if args.devices not in ("auto", "") and not args.device else None
        reranker = cross_encoder_from(args, show_progress=False, device=device)
        report = rerank_run_file(queries, candidates, texts, reranker, args.out, show_progress=not args.quiet,
                                 **options)
    print(f"reranked {report.queries} queries ({report.pairs} pairs, {report.pairs_per_second:.1f} pairs/s) into "
          f"{report.out}; {report.resumed_after} were done before")
    return 0

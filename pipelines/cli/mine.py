"""``esrerank mine``: hard negatives from the first stage, for training."""

from __future__ import annotations

import json

from ..retrieve_rerank import RerankConfig
from .options import (
    add_first_stage_args,
    add_retriever_args,
    first_stage_from,
    fraction,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    read_query_ids,
    teacher_from,
)


def add_parser(commands, common) -> None:
    from ..mining import FORMATS, MiningConfig

    defaults = MiningConfig()
    parser = commands.add_parser("mine", parents=[common], allow_abbrev=False,
                                 help="hard negatives from the first stage, for training")
    parser.add_argument("--data", required=True, help="BEIR folder, collection name or ir_datasets id with the "
                        "training queries and qrels")
    parser.add_argument("--split", default="train", help="qrels split (default train)")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder (a HF datasets dataset, stats.json)")
    add_retriever_args(parser)
    add_first_stage_args(parser)
    parser.add_argument("--retrieve-k", type=positive_int, default=defaults.retrieve_k,
                        help=f"first-stage candidates per query (default {defaults.retrieve_k}: negatives come from "
                        "where the reranker will work, evaluate's --rerank-k)")
    parser.add_argument("--range-min", type=non_negative_int, default=defaults.range_min,
                        help=f"first window position, positives removed (default {defaults.range_min})")
    parser.add_argument("--range-max", type=positive_int, default=defaults.range_max,
                        help=f"end of the window, exclusive (default {defaults.range_max})")
    parser.add_argument("--num-negatives", type=non_negative_int, default=defaults.num_negatives,
                        help=f"hard negatives per query (default {defaults.num_negatives})")
    parser.add_argument("--num-random-negatives", type=non_negative_int, default=defaults.num_random_negatives,
                        help=f"easy negatives per query, drawn at random from the corpus "
                        f"(default {defaults.num_random_negatives})")
    parser.add_argument("--sampling", choices=["top", "random"], default=defaults.sampling,
                        help=f"hard negatives: the first in the window (top) or a seeded sample of it (random) "
                        f"(default {defaults.sampling})")
    parser.add_argument("--teacher", help="model that filters likely false negatives: a cross-encoder, or a "
                        "sentence-transformers bi-encoder (cosine similarity)")
    parser.add_argument("--teacher-type", choices=["auto", "cross-encoder", "bi-encoder"], default="auto",
                        help="auto (default): a one-label sequence classifier is a cross-encoder, else a bi-encoder")
    margin = parser.add_mutually_exclusive_group()
    margin.add_argument("--absolute-margin", type=positive_float, help="drop negatives scoring above positive - X")
    margin.add_argument("--relative-margin", type=fraction, help="drop negatives scoring above positive x (1 - X)")
    parser.add_argument("--output-format", choices=FORMATS, default=defaults.output_format,
                        help=f"rows for sentence-transformers' losses (default {defaults.output_format}, what "
                        "'esrerank train' reads)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--exclude-queries", help="JSON list of query ids to leave out (e.g. a test split)")
    parser.add_argument("--dev-queries", type=non_negative_int, default=None,
                        help="queries held out of training as the dev split 'esrerank train' evaluates on, stops "
                        "early on and picks its checkpoint by (default: min(100, a fifth of the queries); 0: none)")
    parser.add_argument("--dev-retrieve-k", type=positive_int, default=RerankConfig.rerank_k,
                        help="first-stage candidates per dev query reranked during training (default 100: as deep "
                        "as 'esrerank evaluate' reranks)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.corpus import load_collection

    from ..mining import MiningConfig, mine_collection

    collection = load_collection(args.data, args.split, args.data_dir)
    config = MiningConfig(retrieve_k=args.retrieve_k, range_min=args.range_min, range_max=args.range_max,
                          num_negatives=args.num_negatives, num_random_negatives=args.num_random_negatives,
                          sampling=args.sampling, absolute_margin=args.absolute_margin,
                          relative_margin=args.relative_margin, output_format=args.output_format, seed=args.seed)
    teacher = teacher_from(args.teacher, args.teacher_type) if args.teacher else None
    config.check_teacher(teacher)  # before the index is built: a wrong combination fails at once
    retriever, source = first_stage_from(args, collection.documents)
    report = mine_collection(collection, retriever, args.out, config, teacher, dev_queries=args.dev_queries,
                             dev_retrieve_k=args.dev_retrieve_k, exclude=read_query_ids(args.exclude_queries),
                             first_stage_description=source, show_progress=not args.quiet)
    summary = report.summary
    print(f"mined {summary['rows']} rows from {summary['kept']} of {summary['queries']} queries into {args.out}")
    if report.dev_samples_path:
        print(f"held out {len(report.dev_queries)} dev queries (top {args.dev_retrieve_k} candidates each) in "
              f"{report.dev_samples_path}")
    print(json.dumps(summary, indent=2))
    return 0

"""``esrerank train``: train a cross-encoder on mined data."""

from __future__ import annotations

from ..retrieve_rerank import RerankConfig
from .options import (
    add_training_args,
    logger,
    output_folder,
    positive_int,
    read_query_ids,
    teacher_from,
    training_config_from,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("train", parents=[common], allow_abbrev=False,
                                 help="train a cross-encoder on mined data")
    parser.add_argument("--dataset", required=True, help="folder written by 'esrerank mine' (labeled-list)")
    parser.add_argument("--base-model", required=True, help="hub id or local folder; a base encoder gets a new head")
    parser.add_argument("--out", required=True, type=output_folder, help="where the trained model goes")
    add_training_args(parser)
    parser.add_argument("--dev-data", help="collection whose queries are the dev split (early stopping, the "
                        "checkpoint kept) instead of the one 'esrerank mine' held out beside --dataset")
    parser.add_argument("--dev-split", default="test", help="qrels split of --dev-data (default test)")
    parser.add_argument("--dev-queries", help="JSON list of --dev-data's query ids to use (default: all of the split)")
    parser.add_argument("--dev-retrieve-k", type=positive_int, default=RerankConfig.rerank_k,
                        help=f"BM25 candidates per dev query with --dev-data (default {RerankConfig.rerank_k}: as "
                        "deep as 'esrerank evaluate' reranks, so the checkpoint kept is the one best there)")
    parser.add_argument("--teacher", help="distillation: a cross-encoder whose scores of the mined lists the "
                        "model learns instead of the judgments (with --loss margin-mse, the default with a "
                        "teacher, or listnet)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rerank.training import train_cross_encoder

    from ..mining import load_mined, training_dev_samples

    dataset = load_mined(args.dataset)
    evaluation = None
    if args.dev_data:
        from retrieval.corpus import load_collection

        evaluation = load_collection(args.dev_data, args.dev_split, args.data_dir)
    samples = training_dev_samples(args.dataset, evaluation, read_query_ids(args.dev_queries), args.dev_retrieve_k)
    if samples is not None and evaluation is None:
        logger.info("dev split: %d queries held out by 'esrerank mine' (%s)", len(samples), args.dataset)
    config = training_config_from(args)
    teacher = None
    if args.teacher:
        from dataclasses import replace

        teacher = teacher_from(args.teacher, "cross-encoder")
        if args.loss is None:  # no loss asked for: a teacher's scores are learnt as margins
            config = replace(config, loss="margin-mse")
    result = train_cross_encoder(dataset, args.base_model, args.out, config, samples, resume=args.resume,
                                 teacher=teacher)
    per_step = f"{result.seconds_per_step:.2f} s a step, {result.seconds_per_epoch:.0f} s an epoch" \
        if result.seconds_per_step is not None else "no step timed"
    print(f"trained {result.steps} steps of {result.batch_size} ({result.epochs:.1f} epochs) in {result.seconds:.0f} s "
          f"({per_step}); model saved to {result.out_dir}")
    print(result.verdict())
    return 0

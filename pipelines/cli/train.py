"""``esrerank train``: train a cross-encoder on mined data."""

from __future__ import annotations

from .options import add_training_args, logger, positive_int, read_query_ids, training_config_from


def add_parser(commands, common) -> None:
    parser = commands.add_parser("train", parents=[common], allow_abbrev=False,
                                 help="train a cross-encoder on mined data")
    parser.add_argument("--dataset", required=True, help="folder written by 'esrerank mine' (labeled-list)")
    parser.add_argument("--base-model", required=True, help="hub id or local folder; a base encoder gets a new head")
    parser.add_argument("--out", required=True, help="where the trained model goes")
    add_training_args(parser)
    parser.add_argument("--eval-data", help="BEIR folder whose queries evaluate the pipeline during training "
                        "(default: the dev split 'esrerank mine' held out, when there is one)")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--eval-queries", help="JSON list of query ids to evaluate on (default: all of the split)")
    parser.add_argument("--eval-retrieve-k", "--eval-depth", dest="eval_retrieve_k", type=positive_int,
                        default=30,
                        help="BM25 candidates per dev query (default 30)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rerank.training import train_cross_encoder

    from ..mining import load_mined, training_dev_samples

    dataset = load_mined(args.dataset)
    evaluation = None
    if args.eval_data:
        from retrieval.corpus import load_collection

        evaluation = load_collection(args.eval_data, args.eval_split, args.data_dir)
    samples = training_dev_samples(args.dataset, evaluation, read_query_ids(args.eval_queries), args.eval_retrieve_k)
    if samples is not None and evaluation is None:
        logger.info("dev split: %d queries held out by 'esrerank mine' (%s)", len(samples), args.dataset)
    result = train_cross_encoder(dataset, args.base_model, args.out, training_config_from(args), samples,
                                 resume=args.resume)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best dev nDCG@10 "
          f"{result.best_dev_ndcg10 if result.best_dev_ndcg10 is not None else 'n/a'}; model saved to {result.out_dir}")
    return 0

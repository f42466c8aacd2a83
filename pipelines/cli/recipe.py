"""``esrerank recipe``: mine, train and evaluate in one command."""

from __future__ import annotations

from pathlib import Path

from .options import (
    add_first_stage_args,
    add_training_args,
    non_negative_int,
    output_folder,
    positive_int,
    training_config_from,
)


def add_parser(commands, common) -> None:
    from ..mining import MiningConfig
    from ..recipe import RecipeConfig

    recipe, mining = RecipeConfig(), MiningConfig()
    parser = commands.add_parser("recipe", parents=[common], allow_abbrev=False,
                                 help="mine, train and evaluate in one command")
    parser.add_argument("--train-data", required=True, help="collection with the training queries and qrels")
    parser.add_argument("--train-split", default="train", help="its qrels split (default train)")
    parser.add_argument("--heldout-data", required=True,
                        help="collection of the final evaluation; when it is --train-data, --heldout-queries of "
                        "its queries are held out of training")
    parser.add_argument("--heldout-split", default=None,
                        help="its qrels split (default: --train-split when the data is the same, else test)")
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--out", required=True, type=output_folder,
                        help="folder for the mined dataset, the model and the report")
    parser.add_argument("--heldout-queries", type=positive_int, default=recipe.heldout_queries,
                        help="queries held out of training for the final evaluation when --heldout-data is "
                        f"--train-data (default {recipe.heldout_queries})")
    parser.add_argument("--dev-queries", type=non_negative_int, default=recipe.dev_queries,
                        help="queries held out of training as its dev split: early stopping and the best "
                        f"checkpoint (default {recipe.dev_queries})")
    parser.add_argument("--num-negatives", type=non_negative_int, default=mining.num_negatives,
                        help=f"hard negatives per query (default {mining.num_negatives})")
    parser.add_argument("--num-random-negatives", type=non_negative_int, default=mining.num_random_negatives,
                        help="easy negatives per query, at random from the corpus "
                        f"(default {mining.num_random_negatives})")
    parser.add_argument("--retrieve-k", type=positive_int, default=recipe.retrieve_k,
                        help="BM25 candidates per query for mining and for the evaluation "
                        f"(default {recipe.retrieve_k})")
    parser.add_argument("--dev-retrieve-k", type=positive_int, default=recipe.dev_retrieve_k,
                        help=f"BM25 candidates per dev query (default {recipe.dev_retrieve_k}, as deep as the "
                        "evaluation reranks)")
    add_training_args(parser)
    add_first_stage_args(parser)
    parser.add_argument("--resume", action="store_true")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.corpus import load_collection

    from ..evaluation import FIRST_STAGE, RERANKED
    from ..mining import MiningConfig
    from ..recipe import RecipeConfig
    from ..recipe import run_recipe as recipe

    train = load_collection(args.train_data, args.train_split, args.data_dir)
    same_data = Path(args.train_data).resolve() == Path(args.heldout_data).resolve()
    heldout_split = args.heldout_split or (args.train_split if same_data else "test")
    evaluation = (train if same_data and heldout_split == args.train_split
                  else load_collection(args.heldout_data, heldout_split, args.data_dir))
    report = recipe(train, evaluation, args.base_model, args.out, training_config_from(args),
                    RecipeConfig(heldout_queries=args.heldout_queries, dev_queries=args.dev_queries,
                                 retrieve_k=args.retrieve_k, dev_retrieve_k=args.dev_retrieve_k),
                    MiningConfig(retrieve_k=args.retrieve_k, range_max=args.retrieve_k,
                                 num_negatives=args.num_negatives, num_random_negatives=args.num_random_negatives),
                    k1=args.k1, b=args.b, analyzer=args.analyzer, resume=args.resume)
    result = report["evaluation"]
    bm25, reranked = result["measures"][FIRST_STAGE], result["measures"][RERANKED]
    print(f"held-out queries: {result['queries']}; time: {report['seconds']['total']:.0f} s")
    print(f"{'measure':<9} {'BM25':>9} {'reranked':>9} {'p (paired t)':>13}")
    for measure in ("nDCG@10", "RR@10", "R@100", "AP"):
        print(f"{measure:<9} {bm25[measure]:>9.4f} {reranked[measure]:>9.4f} {result['significance'][measure]:>13.4g}")
    rows = [("BM25", bm25["nDCG@10"], bm25["nDCG@10_ci95"]),
            ("reranker alone", reranked["nDCG@10"], reranked["nDCG@10_ci95"])]
    choice = report["fusion_choice"]
    if choice:
        rows.append((f"fused ({choice['fusion']} {choice['alpha']:.2f}, chosen on dev)", result["fusion"]["nDCG@10"],
                     result["fusion"]["nDCG@10_ci95"]))
    for name, value, (low, high) in rows:
        print(f"nDCG@10 {name:<36} {value:.4f}  95% CI [{low:.4f}, {high:.4f}]")
    if choice:
        recorded = "recorded for --fusion auto" if choice["beats_reranker_alone"] else "not recorded"
        print(f"fusion chosen on the dev split ({choice['queries']} queries): {choice['fusion']} alpha "
              f"{choice['alpha']:.2f}, dev nDCG@10 {choice['nDCG@10']:.4f} vs reranker alone "
              f"{choice['reranked_alone_nDCG@10']:.4f}: {recorded}")
    else:
        print("no dev split (--dev-queries 0): no fusion chosen")
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0

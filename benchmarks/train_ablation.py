"""Training ablation on held-out SciFact queries: the user's three commands, one row per setting.

The 809 SciFact training queries are split once (seeded hash of the ids): 200 **held-out** queries that
no row trains or tunes on, and the rest, of which ``esrerank mine`` holds out its default dev split (100)
for early stopping and for choosing the defaults. Each row runs, as a user would:

    esrerank mine  --data D --split train --exclude-queries heldout_ids.json --out ROW/mined [row flags]
    esrerank train --dataset ROW/mined --base-model B --out ROW/model [row flags]

then reranks BM25's top 100 of the dev and the held-out queries with the model as saved (its own max
length and passage handling), and reports nDCG@10 / RR@10 / AP with 95% bootstrap intervals, the paired
t-test against BM25, the fused run (interpolation weight tuned on dev, applied to held-out), and the
time of each step. Rows that mine alike share one mined folder (its time is counted in each row).

    python -m benchmarks.train_ablation --base-model DIR --out /work/runs/ablation [--rows default,bce,...]

Scale options (``--max-length``, ``--rerank-k``, ``--dev-queries``, ``--dev-retrieve-k``) shrink every row alike
for slow machines; the defaults are the full protocol.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA
from pipelines.evaluation import bootstrap_ci, compare, mean_scores, per_query_scores
from pipelines.fusion import fused_run
from pipelines.mining import split_queries
from pipelines.retrieve_rerank import first_stage_run, head_scores
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_collection

# Equal pairs for the lists-a-step rows: 1,024 lists (about two passes over the ~509 training queries).
EQUAL_LISTS = 1024
ROWS = {  # name → (extra mine flags, extra train flags)
    "default": ([], []),
    # the defaults before issue 25: one epoch of 4 lists a step, lr 5e-5 with 10% warmup and linear decay to
    # zero, embeddings trained, dev evaluation on BM25's top 30 four times an epoch, patience 3
    "old-defaults": (["--dev-retrieve-k", "30"],
                     ["--epochs", "1", "--batch-size", "4", "--lr", "5e-5", "--warmup-steps", "13",
                      "--lr-schedule", "linear", "--eval-steps", "32", "--early-stopping", "3", "--train-embeddings"]),
    **{f"lists-{n}": ([], ["--batch-size", str(n), "--max-steps", str(EQUAL_LISTS // n)]) for n in (1, 2, 4, 8)},
    "1-epoch": ([], ["--epochs", "1"]),
    "float32": ([], ["--bf16", "false"]),
    # float32 against the bf16 of lists-4 at the same budget (the float32 row above is a whole default run)
    "lists-4-float32": ([], ["--batch-size", "4", "--max-steps", str(EQUAL_LISTS // 4), "--bf16", "false"]),
    "bce": ([], ["--loss", "bce", "--batch-size", "40"]),  # 4 queries x 10 documents a step, as the default
    "listnet": ([], ["--loss", "listnet"]),
    "hard-only": (["--num-negatives", "9", "--num-random-negatives", "0"], []),
    "teacher-filter": (["--teacher", "{minilm}", "--teacher-type", "bi-encoder", "--relative-margin", "0.05"], []),
    "maxp": ([], ["--passages", "maxp"]),
    "len384": ([], ["--max-length", "384"]),
    "lr5e-5": ([], ["--lr", "5e-5"]),
    "lr2e-4": ([], ["--lr", "2e-4"]),
    "train-embeddings": ([], ["--train-embeddings"]),
    # hard negatives drawn at random from the whole BM25 top 100 instead of its top 6 (issue 25: the model
    # reranked the top 30 better than the top 100, so it had not learnt what to do with deep candidates)
    "random-negatives": (["--sampling", "random"], []),
    # 15 such negatives a list, 2 lists a step: about the pairs a step of the default (4 lists of 10)
    "random-15-lists-2": (["--sampling", "random", "--num-negatives", "15"], ["--batch-size", "2"]),
}
MEASURES = ("nDCG@10", "RR@10", "AP")


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def evaluate(model_dir: Path, queries, bm25_run, texts, rerank_k: int) -> tuple[dict, str, float]:
    """The model's head scores per query (as saved: its own max length and passage handling), and seconds."""
    from rerank.cross_encoder import CrossEncoder

    reranker = CrossEncoder(str(model_dir))
    started = time.perf_counter()
    heads = head_scores(queries, bm25_run, reranker, texts, rerank_k)
    return heads, repr(reranker), time.perf_counter() - started


def reranked_run(queries, bm25_run, heads, alpha: float | None, rerank_k: int):
    """The reranker alone (``alpha=None``) or interpolated with BM25 at weight ``alpha``."""
    return fused_run(queries, bm25_run, heads, rerank_k, None if alpha is None else "interpolate", alpha)


def summarize(per_query: dict, bm25_per_query: dict) -> dict:
    means = mean_scores(per_query)
    result = {m: means[m] for m in MEASURES}
    result["nDCG@10_ci95"] = bootstrap_ci(list(per_query["nDCG@10"].values()))
    result["p_vs_bm25"] = {c.measure: c.p_value for c in compare({m: bm25_per_query[m] for m in MEASURES},
                                                                 {m: per_query[m] for m in MEASURES})}
    return result


def table(out: Path) -> str:
    """A markdown table of every row measured so far under ``out``."""
    lines = ["| row | dev nDCG@10 (BM25) | held-out nDCG@10 [95% CI] | p vs BM25 | RR@10 | AP | fused (α from dev) "
             "| mine s | train s | steps × lists | training pairs | s / step | rerank held-out s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        h, d = r["heldout"], r["dev"]
        low, high = h["reranked"]["nDCG@10_ci95"]
        training = json.loads((path.parent / "model" / "esrerank_training.json").read_text())["result"]
        batch = training.get("batch_size") or 4
        per_step = training.get("seconds_per_step")
        lines.append(
            f"| {r['row']} | {d['reranked']['nDCG@10']:.4f} ({d['bm25']['nDCG@10']:.4f}) | "
            f"{h['reranked']['nDCG@10']:.4f} [{low:.3f}, {high:.3f}] | {h['reranked']['p_vs_bm25']['nDCG@10']:.2g} | "
            f"{h['reranked']['RR@10']:.4f} | {h['reranked']['AP']:.4f} | {h['fused']['nDCG@10']:.4f} "
            f"(α {h['fused']['alpha_tuned_on_dev']}) | {r['seconds']['mine']:.0f} | {r['seconds']['train']:.0f} | "
            f"{training['steps']} × {batch} | {training['steps'] * batch * r.get('docs_per_list', 0):,.0f} | "
            f"{'' if per_step is None else f'{per_step:.2f}'} | {r['seconds']['rerank_heldout']:.0f} |")
    first = next(iter(sorted(out.glob("*/result.json"))), None)
    if first is not None:
        h = json.loads(first.read_text())["heldout"]["bm25"]
        lines.append(f"| BM25 | | {h['nDCG@10']:.4f} [{h['nDCG@10_ci95'][0]:.3f}, {h['nDCG@10_ci95'][1]:.3f}] | | "
                     f"{h['RR@10']:.4f} | {h['AP']:.4f} | | | | | | | |")
    return "\n".join(lines)


def plot(out: Path, path: Path) -> Path:
    """Two panels as a PNG: each row's held-out nDCG@10 with its 95% CI against BM25's, and each row's dev
    curve (nDCG@10 of the dev queries' first-stage candidates reranked) against the lists it had seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime)]
    if not results:
        raise SystemExit(f"no row measured under {out}")
    figure, (heldout_axis, dev_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["row"] for r in results]
    means = [r["heldout"]["reranked"]["nDCG@10"] for r in results]
    cis = [r["heldout"]["reranked"]["nDCG@10_ci95"] for r in results]
    heldout_axis.errorbar(range(len(names)), means, fmt="o", capsize=4,
                          yerr=[[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]])
    bm25 = results[0]["heldout"]["bm25"]
    heldout_axis.axhline(bm25["nDCG@10"], color="gray", linestyle="--", linewidth=1)
    heldout_axis.axhspan(*bm25["nDCG@10_ci95"], color="gray", alpha=0.12)
    heldout_axis.annotate(f"BM25 {bm25['nDCG@10']:.3f}", (0, bm25["nDCG@10"]), textcoords="offset points",
                          xytext=(0, -12), color="gray", fontsize=8)
    heldout_axis.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    heldout_axis.set_ylabel(f"held-out nDCG@10, BM25 top {results[0]['rerank_k']} reranked (95% CI)")
    heldout_axis.set_title(f"{results[0]['heldout']['queries']} held-out queries", fontsize=9)
    for r in results:
        training = json.loads((out / r["row"] / "model" / "esrerank_training.json").read_text())
        lists_a_step = training["result"].get("batch_size") or 4
        history = json.loads((out / r["row"] / "model" / "training_log.json").read_text())
        curve = [(e["step"] * lists_a_step, e["eval_dev_ndcg@10"]) for e in history if "eval_dev_ndcg@10" in e]
        if curve:
            dev_axis.plot(*zip(*curve), marker="o", markersize=3, label=r["row"])
    # BM25's nDCG@10 on the dev queries: its top 10, the same whatever depth a dev evaluation reranks
    dev_axis.axhline(results[0]["dev"]["bm25"]["nDCG@10"], color="gray", linestyle="--", linewidth=1, label="BM25")
    dev_axis.set_xlabel("training lists seen (steps × lists a step)")
    dev_axis.set_ylabel("dev nDCG@10 (first-stage candidates reranked)")
    dev_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "scifact-train"))
    parser.add_argument("--base-model", help="the model every row starts from (needed unless --table-only)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", default="default", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--rerank-k", type=int, default=100, help="BM25 candidates reranked per query (default 100)")
    parser.add_argument("--max-length", type=int, default=None, help="train every row at this length")
    parser.add_argument("--dev-queries", type=int, default=None, help="mine's dev split size (default: mine's)")
    parser.add_argument("--dev-retrieve-k", type=int, default=None, help="mine's dev candidates (default: mine's)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the rows already measured")
    parser.add_argument("--plot", type=Path, help="with --table-only: also draw the rows as this PNG")
    args = parser.parse_args()
    if args.table_only:
        print(table(Path(args.out)))
        if args.plot:
            print(f"plot: {plot(Path(args.out), args.plot)}")
        return
    if not args.base_model:
        parser.error("--base-model is required")
    scale_mine = ([] if args.dev_queries is None else ["--dev-queries", str(args.dev_queries)]) + \
                 ([] if args.dev_retrieve_k is None else ["--dev-retrieve-k", str(args.dev_retrieve_k)])
    scale_train = [] if args.max_length is None else ["--max-length", str(args.max_length)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    esrerank = str(Path(sys.executable).with_name("esrerank"))

    collection = load_collection(args.data, "train")
    rest, heldout = split_queries(collection.queries, args.heldout, seed=12)
    heldout_ids = out / "heldout_ids.json"
    heldout_ids.write_text(json.dumps([q.query_id for q in heldout]))
    index = InMemoryBM25(collection.documents, k1=0.9, b=0.4, analyzer="english")
    texts = collection.texts()
    mined_times: dict[str, tuple[Path, float]] = {}

    for name in args.rows.split(","):
        mine_flags, train_flags = ROWS[name]
        mine_flags = [f.replace("{minilm}", str(args.base_model)) for f in mine_flags] + scale_mine
        train_flags = scale_train + train_flags  # a row's own --max-length comes last and wins
        row = out / name
        row.mkdir(exist_ok=True)
        key = json.dumps(mine_flags)
        if key not in mined_times:
            mined = out / f"mined-{len(mined_times)}"
            seconds = run([esrerank, "mine", "--data", args.data, "--split", "train", "--exclude-queries",
                           str(heldout_ids), "--out", str(mined), "-q", *mine_flags], row / "mine.log")
            mined_times[key] = (mined, seconds)
        mined, mine_s = mined_times[key]
        if not (row / "model" / "config.json").is_file():
            train_s = run([esrerank, "train", "--dataset", str(mined), "--base-model", args.base_model,
                           "--out", str(row / "model"), *train_flags], row / "train.log")
        else:
            train_s = json.loads((row / "model" / "esrerank_training.json").read_text())["result"]["seconds"]
        dev_ids = set(json.loads((mined / "mining_config.json").read_text())["dev_queries"])
        dev = [q for q in rest if q.query_id in dev_ids]
        stats = json.loads((mined / "stats.json").read_text())
        docs_per_list = stats["negatives_per_query"]["mean"] + stats["positives"] / max(1, stats["kept"])
        result = {"row": name, "mine_flags": mine_flags, "train_flags": train_flags, "rerank_k": args.rerank_k,
                  "docs_per_list": docs_per_list, "seconds": {"mine": mine_s, "train": train_s}}
        splits = {"dev": dev, "heldout": heldout}
        heads_by_split = {}
        for split, queries in splits.items():
            qrels = {q.query_id: collection.qrels[q.query_id] for q in queries}
            bm25 = first_stage_run(index, queries, 1000)
            heads, described, seconds = evaluate(row / "model", queries, bm25, texts, args.rerank_k)
            heads_by_split[split] = (queries, qrels, bm25, heads)
            bm25_pq = per_query_scores(bm25, qrels, MEASURES)
            reranked_pq = per_query_scores(reranked_run(queries, bm25, heads, None, args.rerank_k), qrels, MEASURES)
            result[split] = {"queries": len(queries), "bm25": summarize(bm25_pq, bm25_pq),
                             "reranked": summarize(reranked_pq, bm25_pq)}
            result["seconds"][f"rerank_{split}"] = seconds
            result["reranker"] = described
        # fusion: the weight that is best on dev, applied unchanged to the held-out queries
        queries, qrels, bm25, heads = heads_by_split["dev"]
        alphas = [round(a, 2) for a in np.linspace(0.1, 0.9, 9)]
        dev_fused = {a: np.mean(list(per_query_scores(reranked_run(queries, bm25, heads, a, args.rerank_k), qrels,
                                                      ["nDCG@10"])["nDCG@10"].values())) for a in alphas}
        alpha = max(dev_fused, key=dev_fused.get)
        queries, qrels, bm25, heads = heads_by_split["heldout"]
        bm25_pq = per_query_scores(bm25, qrels, MEASURES)
        fused_pq = per_query_scores(reranked_run(queries, bm25, heads, alpha, args.rerank_k), qrels, MEASURES)
        result["heldout"]["fused"] = {**summarize(fused_pq, bm25_pq), "alpha_tuned_on_dev": alpha}
        (row / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        h, d = result["heldout"], result["dev"]
        print(f"{name:<13} dev {d['reranked']['nDCG@10']:.4f} (BM25 {d['bm25']['nDCG@10']:.4f}) | held-out "
              f"reranked {h['reranked']['nDCG@10']:.4f} [{h['reranked']['nDCG@10_ci95'][0]:.3f}, "
              f"{h['reranked']['nDCG@10_ci95'][1]:.3f}] p={h['reranked']['p_vs_bm25']['nDCG@10']:.2g} "
              f"fused {h['fused']['nDCG@10']:.4f} (alpha {alpha}) BM25 {h['bm25']['nDCG@10']:.4f} | "
              f"mine {mine_s:.0f} s train {train_s:.0f} s rerank {result['seconds']['rerank_heldout']:.0f} s",
              flush=True)
    print(table(out))


if __name__ == "__main__":
    main()

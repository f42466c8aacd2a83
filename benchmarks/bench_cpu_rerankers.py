"""Every CPU reranker a user could pick, side by side on one machine, in one run (issue 14).

The same cross-encoder (a local MiniLM-L6 folder), the same pairs, max length 512, one system at a time,
each in its own process (a fresh interpreter: no warm caches or thread pools carried between systems):

- esrerank: its default, and the same without its first-token-only last layer;
- sentence-transformers' ``CrossEncoder``: float32 (its default), bf16 weights;
- in the peers' virtual environment (optimum-intel and optimum-onnx pin an older transformers than
  esrerank's, so they live in their own; ``--peers-python``): sentence-transformers' ONNX and OpenVINO
  backends, ``optimum-onnx`` (ONNX Runtime float32, and its int8 dynamic quantization for AVX2),
  ``optimum-intel`` with OpenVINO (float32, bf16 inference precision, int8 static quantization with
  NNCF), and ``flashrank`` reading that int8 ONNX model as a local model.

Pair sets: MS MARCO-like (seeded queries of ~6 words and passages of ~60 words with a long tail, cut from
SciFact) and SciFact lengths (SciFact training queries and their BM25 top 100 abstracts). Calibration
data for static quantization is another seeded MS MARCO-like set, never the measured pairs.

For each system: pairs/s (best of ``--repeats`` timed passes after a warm-up call), and against
sentence-transformers float32 (the reference): queries whose top 10 is the same list, and the largest
|score difference|. Then esrerank's default against the fastest peer that keeps float32's top 10 for every
query, and against sentence-transformers bf16. Last, the float32 ceiling of each pair set on this CPU
(:func:`float32_ceiling`): the most pairs/s any exact float32 path could reach, and how close esrerank is.

    python -m benchmarks.bench_cpu_rerankers --work DIR [--peers-python ~/.cache/esrerank-peers/peers/bin/python]
        [--model DIR] [--sets msmarco,scifact] [--systems a,b,...] [--repeats 2] [--slow-queries 2] [--plot PNG]
    python -m benchmarks.bench_cpu_rerankers --work DIR --from-results [--plot PNG]   # table again, nothing run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO as ROOT
from benchmarks.common import SHARED_DATA, best_rate, cpu_flags, seeded_minilm, write_json

TRAINED_MODEL = ROOT.parent / "runs" / "ablation" / "default" / "model"  # SciFact-trained MiniLM, if made here
DEFAULT_PEERS_PYTHON = Path.home() / ".cache" / "esrerank-peers" / "peers" / "bin" / "python"

# name -> (environment, description); environment "main" runs with this interpreter, "peers" with --peers-python
SYSTEMS = {
    "esrerank default": ("main", "CrossEncoder(model) — dtype auto (bf16 + float32 top-10 rescoring on bf16 "
                                 "hardware, else float32), last layer for the first token only"),
    "esrerank full last layer": ("main", "CrossEncoder(model, runtime=Runtime(first_token_only=False))"),
    "st fp32": ("main", "sentence-transformers CrossEncoder, defaults (float32)"),
    "st bf16": ("main", "sentence-transformers CrossEncoder, model_kwargs dtype=bfloat16"),
    "st onnx": ("peers", "sentence-transformers CrossEncoder(backend='onnx')"),
    "st openvino": ("peers", "sentence-transformers CrossEncoder(backend='openvino')"),
    "optimum-onnx fp32": ("peers", "ORTModelForSequenceClassification (ONNX Runtime float32)"),
    "onnxruntime int8": ("peers", "ORTQuantizer, AutoQuantizationConfig.avx2(is_static=False, per_channel=True)"),
    "flashrank int8": ("peers", "flashrank.Ranker reading the onnxruntime int8 model as a local model"),
    "openvino fp32": ("peers", "optimum-intel OVModelForSequenceClassification"),
    "openvino bf16": ("peers", "optimum-intel, ov_config INFERENCE_PRECISION_HINT=bf16"),
    "openvino int8": ("peers", "optimum-intel OVQuantizer, OVQuantizationConfig (NNCF static int8)"),
}
REFERENCE = "st fp32"


# --- workloads (main environment) --------------------------------------------------------------------

def msmarco_set(seed: int, queries: int) -> list[tuple[str, str]]:
    from benchmarks.generators.msmarco_like import msmarco_like_pairs

    return msmarco_like_pairs(num_queries=queries, passages_per_query=100, seed=seed)


def scifact_set(data: Path, queries: int) -> list[tuple[str, str]]:
    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import iter_beir_corpus, read_beir_queries

    corpus = {doc.doc_id: doc.contents for doc in iter_beir_corpus(data / "corpus.jsonl")}
    index = InMemoryBM25(({"_id": i, "text": t} for i, t in corpus.items()), k1=0.9, b=0.4)
    chosen = read_beir_queries(data / "queries.jsonl")[:queries]
    return [(query.text, corpus[hit.doc_id]) for query in chosen for hit in index.search(query.text, 100)]


# --- one system in its own process -----------------------------------------------------------------------

def sorted_batches(pairs, batch_size: int = 32):
    """Length-sorted batches of 32, as sentence-transformers' predict makes them: the peers that have no
    predict of their own get the same batching, so none loses to padding."""
    order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def hf_predictor(model, tokenizer, max_length: int):
    def predict(pairs):
        scores = np.empty(len(pairs), dtype=np.float32)
        for batch in sorted_batches(pairs):
            inputs = tokenizer([pairs[i][0] for i in batch], [pairs[i][1] for i in batch], padding=True,
                               truncation="longest_first", max_length=max_length, return_tensors="pt")
            scores[batch] = model(**inputs).logits[:, 0].detach().float().numpy()
        return scores
    return predict


def calibration_inputs(tokenizer, pairs, max_length: int) -> list[dict]:
    return [dict(tokenizer(q, d, truncation="longest_first", max_length=max_length, return_tensors="np"))
            for q, d in pairs]


def build_system(name: str, model: str, max_length: int, work: Path, calibration: list):
    """Load ``name`` and return its predict(pairs) -> float32 logits."""
    import torch

    identity = torch.nn.Identity()
    if name.startswith("esrerank"):
        from rerank.cross_encoder import CrossEncoder
        from rerank.model_loading import Runtime

        kwargs = {} if name == "esrerank default" else {"runtime": Runtime(first_token_only=False)}
        encoder = CrossEncoder(model, max_length=max_length, show_progress=False, **kwargs)
        print(f"  {encoder!r}", file=sys.stderr)
        return encoder.predict
    if name.startswith("st "):
        from sentence_transformers import CrossEncoder

        kwargs = {"activation_fn": identity, "max_length": max_length}
        if name == "st bf16":
            kwargs["model_kwargs"] = {"dtype": torch.bfloat16}
        elif name in ("st onnx", "st openvino"):
            kwargs["backend"] = name.split()[1]
        encoder = CrossEncoder(model, **kwargs)
        return lambda pairs: encoder.predict(pairs, batch_size=32, show_progress_bar=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if name == "optimum-onnx fp32":
        from optimum.onnxruntime import ORTModelForSequenceClassification

        return hf_predictor(ORTModelForSequenceClassification.from_pretrained(model, export=True), tokenizer, max_length)
    if name in ("onnxruntime int8", "flashrank int8"):
        folder = quantized_onnx(model, work)
        if name == "onnxruntime int8":
            from optimum.onnxruntime import ORTModelForSequenceClassification

            onnx = ORTModelForSequenceClassification.from_pretrained(folder, file_name="model_quantized.onnx")
            return hf_predictor(onnx, tokenizer, max_length)
        return flashrank_predictor(folder, model, max_length, work)
    if name.startswith("openvino"):
        from optimum.intel import OVModelForSequenceClassification

        if name == "openvino int8":
            folder = work / "openvino-int8"
            if not (folder / "openvino_model.xml").is_file():
                import nncf
                from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

                fp32 = OVModelForSequenceClassification.from_pretrained(model, export=True, compile=False)
                OVQuantizer.from_pretrained(fp32).quantize(
                    calibration_dataset=nncf.Dataset(calibration), save_directory=folder,
                    ov_config=OVConfig(quantization_config=OVQuantizationConfig()))
            return hf_predictor(OVModelForSequenceClassification.from_pretrained(folder), tokenizer, max_length)
        ov_config = {"INFERENCE_PRECISION_HINT": "bf16"} if name == "openvino bf16" else {"INFERENCE_PRECISION_HINT": "f32"}
        return hf_predictor(OVModelForSequenceClassification.from_pretrained(model, export=True, ov_config=ov_config),
                            tokenizer, max_length)
    raise SystemExit(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")


def quantized_onnx(model: str, work: Path) -> Path:
    folder = work / "onnxruntime-int8"
    if not (folder / "model_quantized.onnx").is_file():
        from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        exported = ORTModelForSequenceClassification.from_pretrained(model, export=True)
        exported.save_pretrained(work / "onnx-fp32")
        ORTQuantizer.from_pretrained(work / "onnx-fp32").quantize(
            save_dir=folder, quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=True))
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    return folder


def flashrank_predictor(onnx_folder: Path, model: str, max_length: int, work: Path):
    """flashrank loads models by name from its cache folder; a folder of that name holding our int8 model
    under the file name it expects is read as it is (nothing downloaded)."""
    import shutil

    from flashrank import Ranker, RerankRequest
    from flashrank.Config import model_file_map

    name = "ms-marco-MiniLM-L-12-v2"
    cache = work / "flashrank-cache"
    target = cache / name
    if not target.is_dir():
        target.mkdir(parents=True)
        for item in onnx_folder.iterdir():
            if item.suffix in (".json", ".txt"):
                shutil.copy(item, target / item.name)
        shutil.copy(onnx_folder / "model_quantized.onnx", target / model_file_map[name])
        # flashrank truncates at min(max_length, the tokenizer's model_max_length): a model trained at 128
        # would be cut at 128 while every other system reads max_length tokens
        config = json.loads((target / "tokenizer_config.json").read_text())
        config["model_max_length"] = max(max_length, config.get("model_max_length", 0))
        (target / "tokenizer_config.json").write_text(json.dumps(config))
    ranker = Ranker(model_name=name, cache_dir=str(cache), max_length=max_length, log_level="WARNING")

    def predict(pairs):
        # flashrank's unit is one query and its passages, all in one ONNX call; it returns sigmoid scores
        scores = np.empty(len(pairs), dtype=np.float32)
        start = 0
        while start < len(pairs):
            end = start
            while end < len(pairs) and pairs[end][0] == pairs[start][0]:
                end += 1
            passages = [{"id": i, "text": pairs[i][1]} for i in range(start, end)]
            for hit in ranker.rerank(RerankRequest(query=pairs[start][0], passages=passages)):
                probability = min(max(float(hit["score"]), 1e-7), 1 - 1e-7)
                scores[hit["id"]] = np.log(probability / (1 - probability))  # back to a logit
            start = end
        return scores
    return predict


def run_worker(args) -> None:
    """Child process: load one system, warm it up, time it on each pair set, write scores and rates."""
    import torch

    spec = json.loads(Path(args.worker_spec).read_text())
    work = Path(spec["work"])
    calibration = None
    if spec["system"] == "openvino int8":
        from transformers import AutoTokenizer

        calibration = calibration_inputs(AutoTokenizer.from_pretrained(spec["model"]),
                                         [tuple(p) for p in spec["calibration"]], spec["max_length"])
    started = time.perf_counter()
    predict = build_system(spec["system"], spec["model"], spec["max_length"], work, calibration)
    load_s = time.perf_counter() - started
    result = {"system": spec["system"], "load_s": load_s, "torch_threads": torch.get_num_threads(), "sets": {}}
    for set_name, pairs in spec["sets"].items():
        pairs = [tuple(p) for p in pairs]
        best, scores = best_rate(predict, pairs, spec["repeats"])
        result["sets"][set_name] = {"pairs_per_s": best, "scores": scores.tolist()}
        print(f"  {spec['system']:<24} {set_name:<8} {best:8.1f} pairs/s", file=sys.stderr, flush=True)
    Path(spec["out"]).write_text(json.dumps(result))


# --- the parent: workloads, one process per system, the table ------------------------------------------

def top10_same_order(scores: np.ndarray, reference: np.ndarray, queries: list[str]) -> tuple[int, int]:
    same = total = 0
    labels = np.array(queries)
    for query in dict.fromkeys(queries):
        rows = np.flatnonzero(labels == query)
        same += list(rows[np.argsort(-scores[rows], kind="stable")][:10]) == \
            list(rows[np.argsort(-reference[rows], kind="stable")][:10])
        total += 1
    return same, total


def cpu_summary() -> dict:
    return {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "isa": cpu_flags()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="folder for pairs, exported models and results")
    parser.add_argument("--model", help="local cross-encoder folder (default: the SciFact-trained MiniLM of "
                                        "this checkout's runs/, else MiniLM with a seeded head)")
    parser.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PYTHON)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact-train")
    parser.add_argument("--sets", default="msmarco,scifact")
    parser.add_argument("--msmarco-queries", type=int, default=20)
    parser.add_argument("--scifact-queries", type=int, default=5)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--slow-queries", type=int, default=2,
                        help="queries per set (the first N x 100 pairs) for the systems that crawl on this CPU: "
                             "bf16 without bf16 hardware (emulated: st bf16 ran 0.14x st fp32 on AVX2) and OpenVINO "
                             "int8 without VNNI (0.3x); default 2")
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: the table, report and chart from the results already in --work")
    parser.add_argument("--plot", type=Path, help="save a bar chart of the table here (PNG)")
    parser.add_argument("--worker-spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_spec:
        run_worker(args)
        return
    if args.work is None:
        parser.error("--work is required")
    if args.from_results:
        reference = json.loads((args.work / f"spec-{REFERENCE.replace(' ', '_')}.json").read_text())
        results = {}
        for name in SYSTEMS:
            out = args.work / f"result-{name.replace(' ', '_')}.json"
            if out.is_file():
                results[name] = json.loads(out.read_text())
        report_table(args, reference["model"], reference["max_length"], reference["sets"], results)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        if TRAINED_MODEL.is_dir():
            model = str(TRAINED_MODEL)
        else:
            model = seeded_minilm(args.work / "minilm-ce")
    sets = {}
    for set_name in args.sets.split(","):
        if set_name == "msmarco":
            sets[set_name] = msmarco_set(seed=0, queries=args.msmarco_queries)
        elif set_name == "scifact":
            sets[set_name] = scifact_set(args.data, args.scifact_queries)
        else:
            parser.error(f"unknown pair set {set_name!r}; use msmarco, scifact")
    calibration = msmarco_set(seed=1, queries=3)[::3]  # 100 pairs, not among the measured ones
    systems = [s for s in args.systems.split(",") if s]
    if REFERENCE not in systems:
        systems.insert(0, REFERENCE)
    isa = cpu_summary()["isa"]
    bf16_hardware = any(f in isa for f in ("avx512_bf16", "amx_bf16"))
    int8_hardware = any(f in isa for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    results = {}
    for name in systems:
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
        environment = SYSTEMS[name][0]
        python = sys.executable if environment == "main" else str(args.peers_python)
        if environment == "peers" and not Path(python).is_file():
            print(f"skipping {name}: no peers environment at {python}", file=sys.stderr)
            continue
        spec_path = args.work / f"spec-{name.replace(' ', '_')}.json"
        out = args.work / f"result-{name.replace(' ', '_')}.json"
        system_sets = sets
        if (name.endswith("bf16") and not bf16_hardware) or (name == "openvino int8" and not int8_hardware):
            system_sets = {s: pairs[:100 * args.slow_queries] for s, pairs in sets.items()}
        spec_path.write_text(json.dumps({"system": name, "model": model, "max_length": args.max_length,
                                         "work": str(args.work), "repeats": args.repeats, "out": str(out),
                                         "sets": system_sets, "calibration": calibration}))
        print(f"{name} ({SYSTEMS[name][1]})", file=sys.stderr, flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        # the peers' interpreter imports this module from the checkout: run from its root, as a module
        done = subprocess.run([python, "-m", __spec__.name, "--worker-spec", str(spec_path)], cwd=ROOT, env=env)
        if done.returncode != 0 or not out.is_file():
            print(f"  {name} failed (exit {done.returncode})", file=sys.stderr)
            continue
        results[name] = json.loads(out.read_text())
    report_table(args, model, args.max_length, sets, results)


def float32_matmul_rate(model: str) -> float:
    """This CPU's float32 matmul rate in FLOP/s at the model's own linear-layer shapes (4,096 token rows),
    on all cores: the best of the shapes, so a ceiling built on it is generous."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    h, i = config.hidden_size, config.intermediate_size
    rate = 0.0
    for rows, inner, outer in ((4096, h, i), (4096, i, h), (4096, h, h)):
        x, weight = torch.randn(rows, inner), torch.randn(outer, inner)
        torch.nn.functional.linear(x, weight)
        started = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, weight)
        rate = max(rate, 10 * 2 * rows * inner * outer / (time.perf_counter() - started))
    return rate


def float32_ceiling(model: str, max_length: int, pairs, matmul_rate: float) -> dict:
    """The most pairs/s any exact float32 path can reach on this CPU: the floating-point work esrerank's
    default must do for the mean pair (every matmul of the encoder at the pairs' real token lengths, no
    padding; the last layer for the first token only, keys and values still for every token; embeddings,
    layer norms, softmax and activations left out, so the bound is generous) over ``matmul_rate``
    (:func:`float32_matmul_rate`)."""
    from transformers import AutoConfig, AutoTokenizer

    config, tokenizer = AutoConfig.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    encoded = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True, max_length=max_length)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.float64)
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    projections = 2 * 4 * h * h  # query, key, value and output projections of one token
    feed_forward = 2 * 2 * h * i
    attention = 2 * 2 * lengths * h  # one token's scores against every token, and its weighted sum of values
    full_layer = lengths * (projections + feed_forward + attention)
    last_layer = lengths * projections / 2 + projections / 2 + feed_forward + attention
    flops = float(((layers - 1) * full_layer + last_layer).mean())
    return {"mean_tokens": float(lengths.mean()), "gflop_per_pair": flops / 1e9, "matmul_gflops": matmul_rate / 1e9,
            "pairs_per_s": matmul_rate / flops}


def report_table(args, model: str, max_length: int, sets: dict, results: dict) -> None:
    """Print the table of each pair set, write ``report.json`` into ``--work``, draw ``--plot``."""
    report = {"cpu": cpu_summary(), "model": model, "max_length": max_length, "sets": {}}
    matmul_rate = float32_matmul_rate(model)  # a property of the machine: measured once for every pair set
    for set_name, pairs in sets.items():
        queries = [q for q, _ in pairs]
        reference = np.array(results[REFERENCE]["sets"][set_name]["scores"], dtype=np.float32)
        rows = {}
        for name, result in results.items():
            scores = np.array(result["sets"][set_name]["scores"], dtype=np.float32)
            # a system timed on the first queries only (--slow-queries) is compared on those
            same, total = top10_same_order(scores, reference[:len(scores)], queries[:len(scores)])
            rows[name] = {"pairs_per_s": result["sets"][set_name]["pairs_per_s"], "top10_same": same, "queries": total,
                          "max_abs_diff": float(np.abs(scores - reference[:len(scores)]).max()),
                          "pairs": len(scores), "load_s": result["load_s"]}
        # peers timed on the first queries only (--slow-queries) ran other pairs: not comparable, not chosen
        exact_peers = {n: r for n, r in rows.items() if not n.startswith("esrerank") and r["pairs"] == len(pairs)
                       and r["top10_same"] == r["queries"]}
        best_exact = max(exact_peers, key=lambda n: exact_peers[n]["pairs_per_s"]) if exact_peers else None
        report["sets"][set_name] = {"pairs": len(pairs), "systems": rows, "best_exact_peer": best_exact}
        print(f"\n{set_name}: {len(pairs)} pairs, {len(set(queries))} queries, max length {max_length}, "
              f"CPU {report['cpu']}")
        print(f"{'system':<24} {'pairs/s':>8} {'vs best exact peer':>19} {'vs st bf16':>11} {'top-10 same order':>18} "
              f"{'max |Δ| vs st fp32':>19}")
        for name, row in rows.items():
            vs_best = row["pairs_per_s"] / rows[best_exact]["pairs_per_s"] if best_exact else float("nan")
            vs_bf16 = row["pairs_per_s"] / rows["st bf16"]["pairs_per_s"] if "st bf16" in rows else float("nan")
            subset = f"  (first {row['pairs']} pairs)" if row["pairs"] < len(pairs) else ""
            print(f"{name:<24} {row['pairs_per_s']:>8.1f} {vs_best:>18.2f}x {vs_bf16:>10.2f}x "
                  f"{row['top10_same']:>13}/{row['queries']:<4} {row['max_abs_diff']:>19.2e}{subset}")
        print(f"best peer keeping float32's top 10 (of those timed on all pairs): {best_exact}")
        ceiling = float32_ceiling(model, max_length, pairs, matmul_rate)
        report["sets"][set_name]["float32_ceiling"] = ceiling
        default = rows.get("esrerank default", {}).get("pairs_per_s")
        print(f"float32 ceiling: {ceiling['gflop_per_pair']:.2f} GFLOP a pair (mean {ceiling['mean_tokens']:.0f} tokens; "
              f"the matmuls esrerank's default must do), this CPU's float32 matmul rate {ceiling['matmul_gflops']:.1f} "
              f"GFLOP/s -> at most {ceiling['pairs_per_s']:.1f} pairs/s"
              + (f"; esrerank default at {default / ceiling['pairs_per_s']:.0%} of it" if default else "")
              + (f"; the ceiling is {ceiling['pairs_per_s'] / rows[best_exact]['pairs_per_s']:.2f}x the best exact peer"
                 if best_exact else ""))
    write_json(args.work / "report.json", report)
    print(f"\nreport: {args.work / 'report.json'}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"chart: {args.plot}")


def plot_report(report: dict, path: Path) -> None:
    """One bar chart per pair set: pairs/s of each system, dark where its top 10 equals float32's for every
    query, light where it does not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["sets"]
    figure, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for axis, (set_name, result) in zip(axes[0], sets.items()):
        rows = sorted(result["systems"].items(), key=lambda item: item[1]["pairs_per_s"])
        exact = [row["top10_same"] == row["queries"] for _, row in rows]
        labels = [name + (f" ({row['pairs']} pairs)" if row["pairs"] < result["pairs"] else "") for name, row in rows]
        axis.barh(labels, [row["pairs_per_s"] for _, row in rows],
                  color=["#1f5f99" if e else "#a6c8e6" for e in exact])
        axis.set_title(f"{set_name}: {result['pairs']} pairs, max length {report['max_length']}")
        axis.set_xlabel("pairs/s (dark: same top 10 as float32 for every query)")
    figure.suptitle(f"CPU rerankers, one run: {report['cpu']['cores']} cores, {', '.join(report['cpu']['isa'])}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

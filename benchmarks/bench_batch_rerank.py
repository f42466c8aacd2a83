"""The batch rerank job at MS MARCO shape: BM25 top-1000 runs over the 8.8M-passage stand-in, reranked
by ``pipelines.batch_rerank.rerank_run_file`` (what ``esrerank rerank`` runs).

Steps (each can be run alone with --steps):
- ``prepare``: BM25 top-``retrieve_k`` for the first ``--queries`` queries from a saved InMemoryBM25 index
  (``benchmarks.bench_bm25_msmarco`` leaves one), written as a TREC run, with the candidates' texts.
- ``speed``: pairs/s of a real-size cross-encoder (MiniLM-L6 shape) on the first ``--speed-queries``
  queries × ``retrieve_k`` candidates, in this process on this machine's device (``--dtype``, ``--devices``:
  several run the data-parallel job, one process each). ``--resume`` continues a run file a killed
  call left; the ``rates`` step then reads the pairs/s of each durable chunk from its progress file.
- ``resume``: every query × ``retrieve_k`` reranked by a tiny BERT (2 layers, 32 wide, built here, so the run is
  minutes, not hours), once uninterrupted and once SIGKILLed when half the queries are durable and
  then run again; the two run files must be byte-identical and the second run must not rescore what
  was durable.
- ``project``: MS MARCO dev (6,980 queries × 1,000) wall time from the speed step's measured speed (on
  one and, ×8, eight GPUs when it ran on one) and from the GPU speed sentence-transformers documents for
  ms-marco-MiniLM-L6-v2 (1,800 docs/s on a V100, https://sbert.net/docs/pretrained-models/ce-msmarco.html).

    python -m benchmarks.bench_batch_rerank --index /tmp/bench-bm25/esrerank \\
        --data ../data/msmarco-shaped [--queries 200] [--retrieve-k 1000] [--speed-queries 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO, last_json_line, module_command, seeded_minilm, write_json

MSMARCO_DEV_PAIRS = 6_980 * 1_000
DOCUMENTED_V100_PAIRS_PER_S = 1_800


def prepare(args) -> None:
    from pipelines.retrieve_rerank import first_stage_run
    from pipelines.runs import write_trec_run
    from retrieval.bm25 import InMemoryBM25
    from retrieval.records import Query

    index = InMemoryBM25.load(args.index)
    with open(args.data / "queries.tsv", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t", 1) for line in handle][:args.queries]
    queries = [Query(qid, text) for qid, text in rows]
    run = first_stage_run(index, queries, args.retrieve_k)
    write_trec_run(run, args.work / "bm25.trec", tag="bm25")
    doc_ids = sorted({hit.doc_id for hits in run.values() for hit in hits})
    texts = dict(zip(doc_ids, index.fetch_texts(doc_ids)))
    (args.work / "texts.json").write_text(json.dumps(texts))
    (args.work / "queries.json").write_text(json.dumps(rows))
    print(f"prepared {len(queries)} queries x {args.retrieve_k} candidates ({len(texts)} distinct passages)")


def load_job(work: Path, limit: int | None = None):
    from pipelines.runs import read_trec_run
    from retrieval.records import Query

    queries = [Query(qid, text) for qid, text in json.loads((work / "queries.json").read_text())][:limit]
    candidates = read_trec_run(work / "bm25.trec")
    texts = json.loads((work / "texts.json").read_text())
    return queries, {q.query_id: candidates[q.query_id] for q in queries}, texts


def speed(args) -> dict:
    from pipelines.batch_rerank import rerank_run_file
    from rerank.cross_encoder import CrossEncoder

    queries, candidates, texts = load_job(args.work, args.speed_queries)
    # Without --model: all-MiniLM-L6-v2 (PyPI) with a seeded classification head, the shape and so the
    # speed of cross-encoder/ms-marco-MiniLM-L6-v2, which cannot be downloaded here
    path = args.model or seeded_minilm(args.work / "minilm-ce")
    out = args.speed_out or args.work / "speed.trec"
    devices = [device for device in args.devices.split(",") if device] if args.devices else []
    stale = [out, out.with_name(out.name + ".progress.jsonl")]
    stale += [out.with_name(f"{out.name}.part-{i}{suffix}") for i in range(len(devices))
              for suffix in ("", ".progress.jsonl")]
    for stale_path in stale if not args.resume else []:
        stale_path.unlink(missing_ok=True)
    if len(devices) > 1:  # the data-parallel job: one process per device, parts merged at the end
        from pipelines.batch_rerank import rerank_run_file_on_devices

        report = rerank_run_file_on_devices(queries, candidates, texts, str(path), devices, out,
                                            {"max_length": args.max_length, "dtype": args.dtype})
        device, dtype = ",".join(devices), args.dtype
    else:
        model = CrossEncoder(str(path), max_length=args.max_length, dtype=args.dtype,
                             device=devices[0] if devices else None)
        report = rerank_run_file(queries, candidates, texts, model, out, show_progress=False,
                                 queries_per_chunk=args.queries_per_chunk)
        device, dtype = str(model.device), str(model.dtype)
    result = {"model": str(args.model or "all-MiniLM-L6-v2 + seeded head (ms-marco-MiniLM-L6-v2's shape)"),
              "device": device, "device_name": device_name(device), "dtype": dtype,
              "max_length": args.max_length, "pairs": report.pairs, "seconds": report.seconds,
              "pairs_per_s": report.pairs / report.seconds}
    print(json.dumps(result))
    return result


def chunk_rates(progress: Path, depth: int, pauses: Path | None) -> dict:
    """pairs/s of a run file made over several calls (killed and resumed), from its progress records:
    each durable chunk's pairs over the time since the record before it in the same call; chunks that
    overlap a pause (lines "START END" in Unix time, when the job was stopped for other work) are left out."""
    records = [json.loads(line) for line in progress.read_text().splitlines() if line.endswith("}")]
    windows = [tuple(map(float, line.split())) for line in pauses.read_text().splitlines()] if pauses else []
    pairs = seconds = 0.0
    skipped = 0
    for before, after in zip(records, records[1:]):
        if after.get("resumed") or "at" not in before or after["done"] == before["done"]:
            continue
        if any(start < after["at"] and end > before["at"] for start, end in windows):
            skipped += 1
            continue
        pairs += (after["done"] - before["done"]) * depth
        seconds += after["at"] - before["at"]
    result = {"queries_done": records[-1]["done"], "complete": bool(records[-1].get("complete")),
              "calls": 1 + sum(1 for r in records if r.get("resumed")), "pairs_timed": int(pairs),
              "seconds_timed": round(seconds, 1), "chunks_left_out_for_pauses": skipped,
              "pairs_per_s": round(pairs / seconds, 2) if seconds else None}
    print(json.dumps(result))
    return result


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device.split(",")[0]))
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def tiny_model(work: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tests.models_support import local_minilm_path

    folder = work / "small-bert"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512, num_labels=1)
        BertForSequenceClassification(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(str(local_minilm_path())).save_pretrained(folder)
    return folder


def child_rerank(work: Path, out: Path) -> None:
    from pipelines.batch_rerank import rerank_run_file
    from rerank.cross_encoder import CrossEncoder

    queries, candidates, texts = load_job(work)
    model = CrossEncoder(str(tiny_model(work)), max_length=256, dtype="float32")
    report = rerank_run_file(queries, candidates, texts, model, out, show_progress=False)
    print(json.dumps({"queries": report.queries, "resumed_after": report.resumed_after, "pairs": report.pairs,
                      "seconds": report.seconds}))


def resume(args) -> dict:
    tiny_model(args.work)
    base = module_command(__spec__.name, "--work", args.work, "--index", args.index, "--data", args.data)
    outputs = {}
    for name in ("whole", "killed"):
        out = args.work / f"{name}.trec"
        if name == "killed" or args.fresh:  # an uninterrupted run left by an earlier call is complete
            for path in (out, out.with_name(out.name + ".progress.jsonl")):
                path.unlink(missing_ok=True)
        outputs[name] = out
    started = time.perf_counter()
    whole = subprocess.run(base + ["--child-out", str(outputs["whole"])], cwd=REPO, capture_output=True, text=True,
                           check=True)
    whole_report = last_json_line(whole.stdout)
    whole_s = time.perf_counter() - started
    progress = outputs["killed"].with_name("killed.trec.progress.jsonl")
    total = len(json.loads((args.work / "queries.json").read_text()))
    # not PIPE: nobody reads it while the job runs, and a full pipe would stop the job
    process = subprocess.Popen(base + ["--child-out", str(outputs["killed"])], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    done = 0
    while process.poll() is None:
        if progress.is_file():
            records = [json.loads(line) for line in progress.read_text().splitlines() if line.endswith("}")]
            done = records[-1].get("done", 0) if records else 0
            if done >= total // 2:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    process.wait()
    second = subprocess.run(base + ["--child-out", str(outputs["killed"])], cwd=REPO, capture_output=True, text=True,
                            check=True)
    second_report = last_json_line(second.stdout)
    identical = outputs["whole"].read_bytes() == outputs["killed"].read_bytes()
    result = {"queries": total, "uninterrupted_run_pairs_scored_in_this_call": whole_report["pairs"],
              "uninterrupted_s": round(whole_s, 1),
              "killed_with_exit": process.returncode, "durable_queries_at_kill": done,
              "resumed_after": second_report["resumed_after"], "pairs_scored_after_resume": second_report["pairs"],
              "identical_run_files": identical, "run_lines": sum(1 for _ in open(outputs["whole"]))}
    print(json.dumps(result))
    return result


def project(speed_result: dict | None) -> dict:
    result = {"msmarco_dev_pairs": MSMARCO_DEV_PAIRS,
              "documented_v100_pairs_per_s": DOCUMENTED_V100_PAIRS_PER_S,
              "projected_1_v100_min": round(MSMARCO_DEV_PAIRS / DOCUMENTED_V100_PAIRS_PER_S / 60, 1),
              "projected_8_v100_min": round(MSMARCO_DEV_PAIRS / DOCUMENTED_V100_PAIRS_PER_S / 8 / 60, 1)}
    if speed_result and speed_result["device"].startswith("cuda"):
        # measured on one GPU; eight is that figure times eight (the job shares queries, nothing else)
        result["measured_gpu"] = speed_result["device_name"]
        result["measured_gpu_pairs_per_s"] = round(speed_result["pairs_per_s"], 1)
        result["projected_1_gpu_min"] = round(MSMARCO_DEV_PAIRS / speed_result["pairs_per_s"] / 60, 1)
        result["projected_8_gpu_min"] = round(MSMARCO_DEV_PAIRS / speed_result["pairs_per_s"] / 8 / 60, 1)
    elif speed_result:
        result["measured_cpu_pairs_per_s"] = round(speed_result["pairs_per_s"], 1)
        result["projected_this_cpu_h"] = round(MSMARCO_DEV_PAIRS / speed_result["pairs_per_s"] / 3600, 1)
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="a saved InMemoryBM25 index of the collection")
    parser.add_argument("--data", type=Path, required=True, help="folder with queries.tsv")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--retrieve-k", type=int, default=1000, help="BM25 candidates per query (default 1000)")
    parser.add_argument("--speed-queries", type=int, default=5)
    parser.add_argument("--model", help="cross-encoder for the speed step (default: the MiniLM-L6 shipped on PyPI)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", default="auto", help="speed step: the model's dtype (default auto)")
    parser.add_argument("--speed-out", type=Path, help="speed step: the run file (default WORK/speed.trec)")
    parser.add_argument("--resume", action="store_true",
                        help="speed step: continue the run file a killed call left (see its progress file)")
    parser.add_argument("--pauses", type=Path, help="rates step: file of 'START END' times the job was stopped")
    parser.add_argument("--queries-per-chunk", type=int, default=32, help="speed step: queries made durable at once")
    parser.add_argument("--devices", default="",
                        help="speed step: the device (default: the model's choice), or several, one process each")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-rerank"))
    parser.add_argument("--steps", default="prepare,speed,resume,project")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument("--fresh", action="store_true", help="redo the uninterrupted run even if one is complete")
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child_out:
        child_rerank(args.work, args.child_out)
        return
    steps = args.steps.split(",")
    results = {}
    if "prepare" in steps:
        prepare(args)
    if "speed" in steps:
        results["speed"] = speed(args)
    if "resume" in steps:
        results["resume"] = resume(args)
    if "rates" in steps:
        results["rates"] = chunk_rates((args.speed_out or args.work / "speed.trec").with_name(
            (args.speed_out or args.work / "speed.trec").name + ".progress.jsonl"), args.retrieve_k, args.pauses)
    if "project" in steps:
        results["project"] = project(results.get("speed"))
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()

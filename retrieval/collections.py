"""Where a test collection comes from, by name: a local folder first, then ir_datasets.

``load_collection(source, split)`` takes
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
- a collection name (``vaswani``, ``cranfield``, ``scifact-train``, …): the folder of that name in a
  data folder (``data_dir``, then ``$ESRERANK_DATA_DIR``, then the ``shared/data`` folder beside the
  checkout esrerank runs from), else the matching ir_datasets id, fetched once into ir_datasets' cache;
- an ir_datasets id (``msmarco-passage/dev/small``, ``msmarco-passage/trec-dl-2019/judged``,
  ``beir/scifact/test``, …): its queries and qrels define the split;
- a HF hub id of the form ``Owner/name`` (``BeIR/scifact``), loaded with ``datasets``.
A path to a folder that is not there is looked up by its last part, so ``../shared/data/vaswani`` still
finds ``vaswani`` elsewhere. When neither a local copy nor the network has it, one error names both ways.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from esrerank_errors import DataError

from .corpus import Collection, check_qrels, load_beir, load_hf_beir
from .records import Document, Query

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ESRERANK_DATA_DIR"
DEFAULT_COLLECTION = "vaswani"  # small (11,429 abstracts, 93 queries), judged, and in ir_datasets
# local collection name → the ir_datasets id with the same documents, queries and judgments
IR_DATASETS_IDS = {
    "vaswani": "vaswani",
    "cranfield": "cranfield",
    "scifact-train": "beir/scifact/train",
    "scifact": "beir/scifact/test",
    "nfcorpus": "beir/nfcorpus/test",
    "msmarco-dev": "msmarco-passage/dev/small",
    "trec-dl-2019": "msmarco-passage/trec-dl-2019/judged",
    "trec-dl-2020": "msmarco-passage/trec-dl-2020/judged",
}


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The local data folders searched for a named collection, in order."""
    folders = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(DATA_DIR_ENV):
        folders.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    folders.append(Path(__file__).resolve().parents[2] / "shared" / "data")  # beside the checkout
    return folders


def load_collection(source: str | os.PathLike | None = None, split: str = "test",
                    data_dir: str | os.PathLike | None = None) -> Collection:
    """The collection ``source`` names (default ``vaswani``), judged on ``split`` (see the module doc).

    Returns:
        A ``Collection`` of documents, judged queries and qrels.

    Example::

        collection = load_collection("vaswani")                          # local copy, else ir_datasets
        collection = load_collection("msmarco-passage/dev/small")        # ir_datasets id
    """
    source = str(source or DEFAULT_COLLECTION)
    path = Path(source).expanduser()
    if path.exists():
        return load_beir(path, split)
    folders = data_dirs(data_dir)
    # A local folder wins over a download, and is looked for before ir_datasets is imported (it takes
    # most of a second): an ir_datasets id by its parts joined with '-' ('msmarco-passage/dev/small' →
    # 'msmarco-passage-dev-small'), a path that is not there by its last part.
    name = source.replace("/", "-")
    local = _local_copy(name, folders)
    ir_dataset = local is None and _is_ir_dataset(source)
    if local is None and not ir_dataset:
        name = path.name or source
        local = _local_copy(name, folders)
    if local is not None:
        logger.info("%s: using the local copy in %s", source, local)
        return load_beir(local, split)
    if name in IR_DATASETS_IDS and not ir_dataset:
        return load_ir_dataset(IR_DATASETS_IDS[name], searched=folders, name=name)
    if ir_dataset:
        return load_ir_dataset(source, searched=folders, name=name)
    if _is_hf_id(source):
        return load_hf_beir(source, split)
    raise DataError(source, f"data folder not found (looked for {name!r} in {_listed(folders)}); "
                            f"known names: {', '.join(sorted(IR_DATASETS_IDS))}, or an ir_datasets id")


def _local_copy(name: str, folders: list[Path]) -> Path | None:
    return next((folder / name for folder in folders if (folder / name / "corpus.jsonl").is_file()), None)


def _is_ir_dataset(source: str) -> bool:
    try:
        import ir_datasets
    except ImportError:
        return False
    return source in ir_datasets.registry


def _is_hf_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _listed(folders: list[Path]) -> str:
    return ", ".join(str(folder) for folder in folders)


def load_ir_dataset(dataset_id: str, searched: list[Path] | None = None, name: str | None = None) -> Collection:
    """An ir_datasets dataset (downloaded once into ir_datasets' cache, ``$IR_DATASETS_HOME``) as a
    ``Collection``: documents (title and text), the queries that have judgments, and the qrels."""
    try:
        import ir_datasets
    except ImportError:
        raise DataError(dataset_id, "needs the ir_datasets package (pip install ir_datasets)") from None
    # ir_datasets' loggers print every download retry on their own handlers (one line each, several per
    # source); the error below says it once. Its progress bars are tqdm's, not logging's, and stay.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        dataset = ir_datasets.load(dataset_id)
        qrels: dict[str, dict[str, int]] = {}
        for qrel in dataset.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
        queries = [Query(str(q.query_id), _text(q)) for q in dataset.queries_iter() if str(q.query_id) in qrels]
        documents = [Document(str(d.doc_id), getattr(d, "title", "") or "", _text(d)) for d in dataset.docs_iter()]
    except Exception as exc:  # downloads fail in many ways; all mean "not here, and not fetchable now"
        where = f"no local copy of {name!r} in {_listed(searched)}, and " if searched and name else ""
        raise DataError(name or dataset_id, f"{where}ir_datasets could not download {dataset_id!r} "
                                            f"({type(exc).__name__}). Either put a BEIR folder named "
                                            f"{name or dataset_id.replace('/', '-')!r} in a data folder (--data-dir "
                                            f"DIR or ${DATA_DIR_ENV}), or run once with network access: ir_datasets "
                                            "keeps it in its cache ($IR_DATASETS_HOME)") from None
    finally:
        logging.disable(previous)
    qrels = check_qrels(qrels, (q.query_id for q in queries), (d.doc_id for d in documents), source=dataset_id)
    return Collection(name or dataset_id.replace("/", "-"), documents, queries, qrels)


def _text(record) -> str:
    text = getattr(record, "text", None)
    return text if isinstance(text, str) else record.default_text()

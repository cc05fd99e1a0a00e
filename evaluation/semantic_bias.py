"""Semantic bias: do label-trained features forget what the labels do not ask for?

Fine k-NN: DINO's weighted 20-NN (``extractors.knn``, T = 0.07) of the 10 Fashion-MNIST classes, database = the
60k training images, queries = the 10k test images. Within-group k-NN: the same, restricted to one coarse group
(``COARSE_GROUPS``) on both sides, with the fine classes as labels: "tops" (T-shirt, pullover, coat, shirt) and
"footwear" (sandal, sneaker, ankle boot). A network trained on the coarse groups only (``supervised_coarse``) was
never asked to tell a pullover from a coat; the within-group score measures whether its features still can
(neural collapse says they should not; "Are Neurons Actually Collapsed?" says the gap may be small).
A "coarse_knn20" (the 5 groups as labels) is reported too: what the coarse network was trained for.

Also the home of the helpers the other measurements of this family share (``weights_missing``, ``knn``,
``descriptor_embeddings``, ``knn_by_descriptor``): ``label_efficiency``, ``transfer`` and
``attention_on_object`` import them from here.

Which descriptor a class-level k-NN uses: a ViT has three from one forward pass (``evaluation.descriptors``: the
CLS token, CLS + GeM patch tokens, and that whitened as served). The served one is tuned for copy detection over a
dense 70k database; with a sparse database (a few labelled images per class) its whitening amplifies directions
that carry no class signal (DINO with 1 label per class: 0.257 whitened, 0.660 with the CLS token). So every ViT is
measured with all three, every number is kept, and the headline takes each extractor's best of the three: the same
rule for every extractor on both sides of a comparison.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from evaluation.descriptors import DescriptorEmbedder
from extractors.datasets import COARSE_GROUPS, COARSE_OF_CLASS, load_fashion_mnist
from extractors.knn import knn_accuracy
from extractors.registry import PIXELS, get_spec
from extractors.training import MetricsLog

DEFAULT_EXTRACTORS = [PIXELS, "dino_vit_femto_p7_fmnist", "supervised_vit_femto_p7_fmnist",
                      "supervised_coarse_vit_femto_p7_fmnist", "random_vit_femto_p7_fmnist"]
GROUPS = ("tops", "footwear")
K = 20
QUICK_DB, QUICK_QUERIES = 3000, 600  # first training / test images in quick mode


# ---- shared helpers ---------------------------------------------------------------------------------------------

def weights_missing(name: str) -> str | None:
    """Why extractor ``name`` cannot be measured now (its weights file is not there yet), or None if it can."""
    spec = get_spec(name)
    try:
        path = spec.weights()
    except Exception as e:  # e.g. the package that holds EfficientNet's weights is not installed
        return f"weights unavailable: {type(e).__name__}: {e}"
    if path is not None and not Path(path).exists():
        return f"weights not found at {path} (not trained yet?): skipped"
    if spec.whitening is not None and not spec.whitening().exists():
        return f"no whitening at {spec.whitening()}: run `vsearch fit-whitening --model {name}`"
    return None


def measurable(names: list[str], out: dict) -> list[str]:
    """The names that can be measured now; each of the others gets ``{"skipped": why}`` in ``out``."""
    ready = []
    for name in names:
        note = weights_missing(name)
        if note:
            out[name] = {"skipped": note}
        else:
            ready.append(name)
    return ready


def weights_info(name: str) -> dict:
    """Which weights a number was measured with: path, modification time and, for our checkpoints, the last epoch
    of the training log beside them (weights still being trained change between runs)."""
    path = get_spec(name).weights()
    if path is None:
        return {"weights": None}
    path = Path(path)
    info: dict = {"weights": str(path), "modified": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                  time.localtime(path.stat().st_mtime))}
    epochs = [r.get("epoch") for r in MetricsLog(path.parent / "log.jsonl").read()]
    epochs = [e for e in epochs if isinstance(e, int | float)]
    if epochs:
        info["log_last_epoch"] = max(epochs)
    return info


def knn(db_feats, db_labels, q_feats, q_labels, k: int = K) -> float:
    """Weighted k-NN accuracy (DINO's protocol), with ``k`` capped at the database size. Unit-norm features."""
    k = min(k, len(db_feats))
    return knn_accuracy(db_feats, db_labels, q_feats, q_labels, k=k)


def descriptor_embeddings(name: str, images) -> dict[str, torch.Tensor]:
    """``{descriptor: unit-norm [N, D]}`` of uint8 images (the gateway's resize): a ViT gives ``cls`` and
    ``cls_gem4``, plus ``cls_gem4_whitened`` with the whitening it serves when one is fitted; any other extractor
    gives its one embedding under ``served``."""
    emb = DescriptorEmbedder(name)
    return emb.with_served_whitening(emb.embed(images, get_spec(name).input_size))


def best_descriptor(scores: dict[str, float]) -> str:
    """The descriptor with the highest score (``max`` keeps the first of equals, in the order measured)."""
    return max(scores, key=scores.__getitem__)


def knn_by_descriptor(db: dict[str, torch.Tensor], db_labels, queries: dict[str, torch.Tensor], q_labels,
                      k: int = K) -> dict:
    """Weighted k-NN with every descriptor ``db`` and ``queries`` share: ``{"accuracy": best, "descriptor":
    its name, "by_descriptor": {descriptor: accuracy}}``."""
    by = {d: knn(db[d], db_labels, queries[d], q_labels, k) for d in db if d in queries}
    best = best_descriptor(by)
    return {"accuracy": by[best], "descriptor": best, "by_descriptor": by}


def load_data(data: dict | None = None) -> dict:
    data = data if data is not None else {}
    if "train" not in data:
        data["train"], data["test"] = load_fashion_mnist("train"), load_fashion_mnist("test")
    return data


# ---- the measurement --------------------------------------------------------------------------------------------

def group_subset(labels: np.ndarray, group: str) -> np.ndarray:
    """Positions of ``labels`` that belong to the classes of coarse group ``group``."""
    return np.flatnonzero(np.isin(np.asarray(labels), COARSE_GROUPS[group]))


def training_compute(name: str) -> dict | None:
    """What training cost: epochs and wall seconds summed over the runs logged beside the weights (every
    ``log*.jsonl``: a run continued from another's backbone keeps its own log; each log's ``wall_s`` is cumulative
    over that run's resumes). None for an extractor with no training log."""
    weights = get_spec(name).weights()
    logs = sorted(Path(weights).parent.glob("log*.jsonl")) if weights is not None else []
    runs = []
    for log in logs:
        records = MetricsLog(log).read()
        if records:
            runs.append({"log": log.name, "epochs": max(r["epoch"] for r in records),
                         "wall_s": max(r["wall_s"] for r in records)})
    if not runs:
        return None
    return {"epochs": sum(r["epochs"] for r in runs), "wall_s": round(sum(r["wall_s"] for r in runs), 1),
            "runs": runs}


def within_group_knn(db_feats, db_labels, q_feats, q_labels, groups=GROUPS, k: int = K) -> dict:
    """Fine-class weighted k-NN inside each group (database and queries both restricted to the group), and the
    mean over the groups."""
    db_labels, q_labels = np.asarray(db_labels), np.asarray(q_labels)
    out = {}
    for g in groups:
        d, q = group_subset(db_labels, g), group_subset(q_labels, g)
        out[g] = knn(db_feats[d], db_labels[d], q_feats[q], q_labels[q], k)
    out["mean"] = float(np.mean([out[g] for g in groups]))
    return out


def semantic_bias(extractors: list[str] | None = None, quick: bool = False, k: int = K,
                  data: dict | None = None) -> dict:
    """``{name: {"knn20", "descriptor", "coarse_knn20", "within_group_knn20": {"tops", "footwear", "mean"},
    "by_descriptor": {descriptor: {"knn20", "within_group_knn20"}}, "n_db", "n_queries", "wall_s", ...}}``: each
    ViT at the descriptor with the best fine 20-NN (the coarse and within-group numbers use that one too); an
    extractor whose weights are not there yet gets ``{"skipped": why}``.
    ``quick``: the first 3,000 training images and 600 test images."""
    data = load_data(data)
    train, test = data["train"], data["test"]
    db_idx = np.arange(QUICK_DB if quick else len(train))
    q_idx = np.arange(QUICK_QUERIES if quick else len(test))
    db_y, q_y = train.labels[db_idx], test.labels[q_idx]
    out: dict = {}
    for name in measurable(extractors or DEFAULT_EXTRACTORS, out):
        t0 = time.perf_counter()
        db_all = descriptor_embeddings(name, train.images[db_idx])
        q_all = descriptor_embeddings(name, test.images[q_idx])
        fine = knn_by_descriptor(db_all, db_y, q_all, q_y, k)
        within = {d: within_group_knn(db_all[d], db_y, q_all[d], q_y, k=k) for d in fine["by_descriptor"]}
        best = fine["descriptor"]  # the coarse and within-group numbers use the same one
        out[name] = {
            "knn20": fine["accuracy"], "descriptor": best,
            "coarse_knn20": knn(db_all[best], COARSE_OF_CLASS[db_y], q_all[best], COARSE_OF_CLASS[q_y], k),
            "within_group_knn20": within[best],
            "by_descriptor": {d: {"knn20": acc, "within_group_knn20": within[d]["mean"]}
                              for d, acc in fine["by_descriptor"].items()},
            "n_db": len(db_idx), "n_queries": len(q_idx), **weights_info(name),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    return out

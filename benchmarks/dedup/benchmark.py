"""The run: one stack (Triton, a Milvus server on a data dir of its own, the gateway) serving the ViT and the
EfficientNet; per collection, index it, find its duplicate groups with FindDuplicates at the calibrated
NEAR_DUPLICATE bound (the SDK call ``vsearch dedup`` makes), then hash it and group it at each Hamming threshold;
then the dedup gate's cost: the same images upserted under ALLOW and under FLAG, one stream at a time."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from PIL import Image

from benchmarks.common import console, finish, loadavg, png_bytes
from benchmarks.dedup.collection import INJECTED_LEVELS, Collection, inject
from benchmarks.dedup.hashes import HASHES, group_labels, hash_codes
from benchmarks.dedup.scoring import labels_from_groups, score
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

NAME = "dedup"
FMNIST_MODEL, PHOTO_MODEL = "dino_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"
# (originals, injected copies, copies per original)
FULL = {"fashion_mnist": (70_000, 3_000, 1), "photos": (39, 351, 9)}
QUICK = {"fashion_mnist": (2_000, 2 * len(INJECTED_LEVELS), 1), "photos": (39, 39, 1)}
THRESHOLDS, QUICK_THRESHOLDS = (0, 2, 4, 6, 8, 10), (0, 4, 10)
MAX_HASH_PAIRS = 20_000_000
GATE_ITEMS, QUICK_GATE_ITEMS = 2_000, 256
GATE_BATCH = 64
INDEX_BATCH, INDEX_STREAMS = 64, 4  # as `vsearch index` sends them
TIMEOUT_S = 600.0


def upsert(stub, model: str, ids: list[str], images: list[Image.Image], batch: int, streams: int,
           policy: int = pb.DUPLICATE_POLICY_ALLOW) -> pb.UpsertResponse:
    """Upsert streams of ``batch`` items, ``streams`` at a time (PNG-encoded in the sending thread, as the SDK
    does); the replies summed."""

    def send(start: int) -> pb.UpsertResponse:
        return stub.Upsert(iter([pb.UpsertRequest(model=model, id=i, image=png_bytes(im), duplicate_policy=policy)
                                 for i, im in zip(ids[start:start + batch], images[start:start + batch],
                                                  strict=True)]), timeout=TIMEOUT_S)

    total = pb.UpsertResponse()
    with ThreadPoolExecutor(streams) as pool:
        for reply in pool.map(send, range(0, len(ids), batch)):
            total.received += reply.received
            total.upserted += reply.upserted
            total.skipped += reply.skipped
            total.errors.extend(reply.errors)
            total.duplicates.extend(reply.duplicates)
    return total


def fashion_mnist(n: int, n_copies: int, per: int) -> Collection:
    from extractors.datasets import load_fashion_mnist

    ds = load_fashion_mnist("all")
    return inject("fashion_mnist", list(ds.ids[:n]), [ds.pil(i) for i in range(n)], n_copies, 0, per)


def photos(n: int, n_copies: int, per: int) -> Collection:
    from extractors.datasets import load_photos

    ds = load_photos()
    return inject("photos", list(ds.ids[:n]), [ds.pil(i) for i in range(min(n, len(ds)))], n_copies, 0, per)


def measure_set(stub, collection: Collection, model: str, thresholds: tuple[int, ...], settle_s: float) -> dict:
    t0 = time.perf_counter()
    reply = upsert(stub, model, collection.ids, collection.images, INDEX_BATCH, INDEX_STREAMS)
    index_s = time.perf_counter() - t0
    if reply.errors or reply.upserted != len(collection.ids):
        raise RuntimeError(f"indexing {collection.name} failed: {reply.upserted} written, {reply.errors[:3]}")
    time.sleep(settle_s)  # the gateway flushes after a bulk write; Milvus then seals and indexes the rows
    t0 = time.perf_counter()
    groups, summary = [], {}
    request = pb.FindDuplicatesRequest(model=model, min_verdict=pb.VERDICT_NEAR_DUPLICATE)
    for message in stub.FindDuplicates(request, timeout=TIMEOUT_S):  # what `vsearch dedup` reads
        kind = message.WhichOneof("message")
        if kind == "group":
            groups.append(list(message.group.ids))
        elif kind == "summary":
            m = message.summary
            summary = {"items": m.items, "pairs": m.pairs, "elapsed_s": m.elapsed_s, "min_score": m.min_score}
    wall = time.perf_counter() - t0
    if summary.get("items") != len(collection.ids):  # the key-paged scan must see every item exactly once
        raise RuntimeError(f"FindDuplicates scanned {summary.get('items')} items of {len(collection.ids)}")
    embedding = {"wall_s": round(wall, 2), "server_elapsed_s": round(summary["elapsed_s"], 2),
                 "min_score": round(summary["min_score"], 4), "pairs": summary["pairs"],
                 "items_scanned": summary["items"],
                 **score(collection, labels_from_groups(collection, groups))}
    console.print(f"{collection.name}: FindDuplicates {embedding['wall_s']} s, precision {embedding['precision']}, "
                  f"recall {embedding['recall']}, F1 {embedding['f1']}")
    hashes: dict = {}
    for kind in HASHES:
        codes, hash_s = hash_codes(collection.images, kind)
        rows = []
        for t in thresholds:
            labels, n_pairs, group_s = group_labels(codes, t, MAX_HASH_PAIRS)
            row = {"hamming": t, "pairs": n_pairs, "wall_s": round(hash_s + group_s, 2)}
            if labels is None:
                row["skipped"] = f"more than {MAX_HASH_PAIRS:,} pairs: chains nearly everything"
            else:
                row.update(score(collection, labels))
            rows.append(row)
            console.print(f"{collection.name}: {kind} at Hamming {t}: " + (
                row.get("skipped") or f"precision {row['precision']}, recall {row['recall']}, F1 {row['f1']}"))
        hashes[kind] = {"hash_s": round(hash_s, 2), "thresholds": rows}
    return {"items": len(collection.ids), "originals": int((~collection.is_copy).sum()),
            "copies": int(collection.is_copy.sum()), "levels": sorted(set(collection.level) - {""}),
            "model": model, "index_s": round(index_s, 1), "find_duplicates": embedding, "hashes": hashes}


def gate_cost(stub, model: str, n: int, rounds: int) -> dict:
    """ms per upserted item, one stream of GATE_BATCH items at a time: ALLOW vs FLAG on the same images (FLAG's
    items duplicate the ALLOW ones written just before, so every one of them is flagged: the worst case)."""
    from extractors.datasets import load_fashion_mnist

    ds = load_fashion_mnist("test")
    images = [ds.pil(i) for i in range(n)]
    runs: dict[str, list[float]] = {"allow": [], "flag": []}
    flagged = 0
    for r in range(rounds):
        for policy in ("allow", "flag") if r % 2 == 0 else ("flag", "allow"):
            ids = [f"gate-{r}-{policy}-{i}" for i in range(n)]
            value = pb.DUPLICATE_POLICY_FLAG if policy == "flag" else pb.DUPLICATE_POLICY_ALLOW
            t0 = time.perf_counter()
            reply = upsert(stub, model, ids, images, GATE_BATCH, 1, value)
            runs[policy].append((time.perf_counter() - t0) * 1e3 / n)
            flagged += len(reply.duplicates) if policy == "flag" else 0
    allow, flag = min(runs["allow"]), min(runs["flag"])
    return {"items": n, "rounds": rounds, "batch": GATE_BATCH, "streams": 1, "flagged": flagged,
            "allow_ms_per_item": round(allow, 3), "flag_ms_per_item": round(flag, 3),
            "overhead": round(flag / allow - 1, 3), "runs_ms_per_item": {k: [round(x, 3) for x in v]
                                                                         for k, v in runs.items()}}


def run(quick: bool = False) -> dict:
    from launchers.ports import free_port
    from launchers.stack import Stack

    sizes, thresholds = (QUICK, QUICK_THRESHOLDS) if quick else (FULL, THRESHOLDS)
    settings = Settings()
    result: dict = {"quick": quick, "loadavg_1m": {"start": loadavg()}, "sets": {}}
    with tempfile.TemporaryDirectory(prefix="vsearch-bench-dedup-") as tmp:
        stack_settings = settings.model_copy(update={"models": [FMNIST_MODEL, PHOTO_MODEL],
                                                     "milvus_data_dir": Path(tmp) / "milvus"})
        with Stack(stack_settings, gateway_port=free_port()) as stack:
            channel = grpc.insecure_channel(stack.address, options=[("grpc.max_receive_message_length", 64 << 20)])
            stub = search_pb2_grpc.SearchServiceStub(channel)
            models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=60).models}
            result["calibration"] = {}
            for model in (FMNIST_MODEL, PHOTO_MODEL):
                if not models[model].HasField("calibration"):
                    raise RuntimeError(f"{model} has no calibration ({models[model].note}): run `vsearch calibrate`")
                c = models[model].calibration
                result["calibration"][model] = {"version": c.version, "exact_min_score": round(c.exact_min_score, 4),
                                                "near_duplicate_min_score": round(c.near_duplicate_min_score, 4)}
            settle = settings.flush_idle_s + (3.0 if quick else 10.0)
            for name, build, model in (("fashion_mnist", fashion_mnist, FMNIST_MODEL),
                                       ("photos", photos, PHOTO_MODEL)):
                with console.status(f"building {name} with injected copies"):
                    collection = build(*sizes[name])
                result["sets"][name] = measure_set(stub, collection, model, thresholds, settle)
            result["gate"] = gate_cost(stub, FMNIST_MODEL, QUICK_GATE_ITEMS if quick else GATE_ITEMS,
                                       1 if quick else 2)
            console.print(f"gate: ALLOW {result['gate']['allow_ms_per_item']} ms/item, FLAG "
                          f"{result['gate']['flag_ms_per_item']} ms/item")
            channel.close()
    result["loadavg_1m"]["end"] = loadavg()
    return finish(NAME, result)

"""The run: each preset's real training loop (``train_dino`` / ``train_supervised``, DataLoader decoding included)
on a folder of real images, twice, for ``short`` and ``long`` batches; the difference in wall time over the extra
images is the steady-state throughput (start-up, the first batches' kernel selection and the DataLoader's start cancel
out). The folder: brain MRI from ../shared/data when unpacked in build/data/brain-mri (224 px JPEG, the presets'
first real domain), else Fashion-MNIST test images written as 56 px PNG files. A flat folder: no class sub-folders,
so no k-NN monitor runs inside the timing (supervised runs get their labels from a copy with class folders)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import console, finish, loadavg
from extractors.datasets import index_image_folder, load_fashion_mnist
from extractors.presets import DINO_PRESETS, SUPERVISED_PRESETS

NAME = "training"
ROOT = Path(__file__).resolve().parents[2]
MRI = ROOT / "build" / "data" / "brain-mri" / "Training"
BASELINE = ("dino", "fmnist-femto-p7-continue")  # the recipe of the served Fashion-MNIST DINO model
PRESETS = [BASELINE, ("dino", "cpu-vit-femto-p4-32px"), ("dino", "cpu-vit-pico-p8-64px"),
           ("dino", "cpu-effnet-lite0-adapt-96px"), ("supervised", "cpu-vit-pico-p8-64px"),
           ("supervised", "cpu-effnet-lite0-finetune-96px")]
QUICK_PRESETS = [BASELINE, ("dino", "cpu-vit-pico-p8-64px")]


def make_folder(root: Path, n: int) -> tuple[Path, str]:
    """``root/classes/<class>/`` with ``n`` real images (symlinks to the MRI set, or Fashion-MNIST PNGs)."""
    folder = root / "classes"
    if MRI.is_dir():
        paths = index_image_folder(MRI).paths
        picks = np.random.default_rng(0).choice(len(paths), min(n, len(paths)), replace=False)
        for i in picks:
            dst = folder / paths[i].parent.name / paths[i].name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(paths[i])
        return folder, f"brain MRI (224 px JPEG), {len(picks)} images"
    ds = load_fashion_mnist("test")
    for i in range(n):
        dst = folder / f"c{ds.labels[i]}" / f"{i:05d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i]).resize((56, 56)).save(dst)
    return folder, f"Fashion-MNIST test images as 56 px PNG files, {n} images"


def flat_copy(folder: Path, root: Path) -> Path:
    flat = root / "flat"
    flat.mkdir()
    for p in folder.glob("*/*"):
        (flat / f"{p.parent.name}_{p.name}").symlink_to(p.resolve())
    return flat


def timed_run(kind: str, preset: str, folder: Path, batches: int, threads: int) -> float:
    """Wall seconds of one epoch of ``batches`` batches of ``preset`` on ``folder``."""
    from extractors.train_dino import train_dino
    from extractors.train_supervised import train_supervised

    cfg = (DINO_PRESETS if kind == "dino" else SUPERVISED_PRESETS)[preset]
    cfg = cfg.model_copy(update={"images": str(folder), "epochs": 1, "train_limit": batches * cfg.batch_size,
                                 "threads": threads, "workers": 1, "time_limit_min": 0.0, "warmup_epochs": 0,
                                 "checkpoint_every_min": 0.0})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        (train_dino if kind == "dino" else train_supervised)(cfg, Path(out), resume=False)
        return time.perf_counter() - t0


def run(quick: bool = False, threads: int = 2) -> dict:
    short, long = (1, 3) if quick else (2, 8)
    presets = QUICK_PRESETS if quick else PRESETS
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder, data = make_folder(Path(tmp), 1024)
        flat = flat_copy(folder, Path(tmp))
        rows: dict = {}
        load_start = loadavg()
        for kind, preset in presets:
            cfg = (DINO_PRESETS if kind == "dino" else SUPERVISED_PRESETS)[preset]
            source = flat if kind == "dino" else folder  # supervised needs its class folders (its monitor runs once)
            times = [timed_run(kind, preset, source, n, threads) for n in (short, long)]
            images = (long - short) * cfg.batch_size
            ips = images / max(times[1] - times[0], 1e-6)
            b = cfg.backbone
            crops = (f"2 x {b.img_size} + {cfg.local_crops_number} x {cfg.local_crop_size} px"  # type: ignore[attr-defined]
                     if kind == "dino" else f"1 x {b.img_size} px")
            rows[f"{kind}/{preset}"] = {"images_per_s": round(ips, 1), "batch_size": cfg.batch_size,
                                        "network": f"{b.arch}" + (f"/{b.patch_size}" if b.patch_size else ""),
                                        "crops": crops, "seconds": [round(t, 2) for t in times]}
            console.print(f"{kind}/{preset}: {ips:.1f} images/s ({crops}, batch {cfg.batch_size})")
        shutil.rmtree(folder, ignore_errors=True)
    base = rows["/".join(BASELINE)]["images_per_s"]
    for row in rows.values():
        row["vs_baseline"] = round(row["images_per_s"] / base, 3)
    return finish(NAME, {"quick": quick, "threads": threads, "data": data, "batches": [short, long],
                         "baseline": "/".join(BASELINE), "presets": rows,
                         "loadavg_1m": {"start": load_start, "end": loadavg()}})

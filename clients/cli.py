"""``vsearch``: the command line of visual-search (typer + rich)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="visual-search: train extractors, export them, serve and search.", no_args_is_help=True)
train_app = typer.Typer(help="Train a feature extractor (DINO self-supervised or supervised ViT).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console()


def _apply_overrides(cfg, epochs, batch_size, lr, train_limit, time_limit_min, threads, seed, arch, patch_size,
                     knn_every):
    updates = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, train_limit=train_limit,
                                     time_limit_min=time_limit_min, threads=threads, seed=seed,
                                     knn_every=knn_every).items() if v is not None}
    backbone = cfg.backbone.model_copy(update={k: v for k, v in dict(arch=arch, patch_size=patch_size).items()
                                               if v is not None})
    return cfg.model_copy(update={**updates, "backbone": backbone})


def _train(kind: str, preset: str, dataset: str, out: Path | None, resume: bool, **overrides) -> None:
    from extractors.presets import DINO_PRESETS, SUPERVISED_PRESETS

    presets = DINO_PRESETS if kind == "dino" else SUPERVISED_PRESETS
    if preset not in presets:
        console.print(f"[red]unknown preset {preset!r}[/]; choose one of: {', '.join(presets)}")
        raise typer.Exit(2)
    cfg = _apply_overrides(presets[preset].model_copy(update={"dataset": dataset}), **overrides)
    out = out or Path("runs") / f"{kind}_{preset}"
    console.print(f"[bold]{kind}[/] training, preset [cyan]{preset}[/], writing to [cyan]{out}[/]")
    console.print_json(cfg.model_dump_json())
    if kind == "dino":
        from extractors.train_dino import train_dino

        record = train_dino(cfg, out, resume=resume)
    else:
        from extractors.train_supervised import train_supervised

        record = train_supervised(cfg, out, resume=resume)
    console.print(f"[green]done[/]: {record}")


_PRESET = typer.Option("fmnist-femto-p7", help="training recipe (extractors/presets.py)")
_DATASET = typer.Option("fashion-mnist", help="training data set")
_OUT = typer.Option(None, help="run folder (checkpoint, log.jsonl, weights); default runs/<kind>_<preset>")
_RESUME = typer.Option(True, help="resume from the run folder's checkpoint when there is one")


@train_app.command("dino")
def train_dino_cmd(
    preset: str = _PRESET, dataset: str = _DATASET, out: Path = _OUT, resume: bool = _RESUME,
    epochs: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
    train_limit: int = typer.Option(None, help="use the first N training images only"),
    time_limit_min: float = typer.Option(None, help="stop and save after this many minutes"),
    threads: int = typer.Option(None), seed: int = typer.Option(None), arch: str = typer.Option(None),
    patch_size: int = typer.Option(None), knn_every: int = typer.Option(None),
) -> None:
    """Self-supervised DINO training (no labels are read)."""
    _train("dino", preset, dataset, out, resume, epochs=epochs, batch_size=batch_size, lr=lr,
           train_limit=train_limit, time_limit_min=time_limit_min, threads=threads, seed=seed, arch=arch,
           patch_size=patch_size, knn_every=knn_every)


@train_app.command("supervised")
def train_supervised_cmd(
    preset: str = _PRESET, dataset: str = _DATASET, out: Path = _OUT, resume: bool = _RESUME,
    epochs: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
    train_limit: int = typer.Option(None, help="use the first N training images only"),
    time_limit_min: float = typer.Option(None, help="stop and save after this many minutes"),
    threads: int = typer.Option(None), seed: int = typer.Option(None), arch: str = typer.Option(None),
    patch_size: int = typer.Option(None), knn_every: int = typer.Option(None),
) -> None:
    """Supervised ViT training (cross-entropy on labels): the baseline DINO is compared with."""
    _train("supervised", preset, dataset, out, resume, epochs=epochs, batch_size=batch_size, lr=lr,
           train_limit=train_limit, time_limit_min=time_limit_min, threads=threads, seed=seed, arch=arch,
           patch_size=patch_size, knn_every=knn_every)


@app.command("knn-report")
def knn_report_cmd(
    extractor: list[str] = typer.Option(None, help="extractor names (default: pixels, random, DINO, supervised)"),
    out: Path = typer.Option(Path("reports/extractors"), help="where the JSON, Markdown and PNG go"),
    limit_train: int = typer.Option(0, help="use the first N training images as the database (0 = all 60k)"),
    limit_test: int = typer.Option(0, help="use the first N test images as queries (0 = all 10k)"),
) -> None:
    """Weighted 20-NN accuracy on Fashion-MNIST for each extractor, and the training curves."""
    from extractors.knn_report import FMNIST_EXTRACTORS, knn_report

    knn_report(extractor or FMNIST_EXTRACTORS, out, limit_train, limit_test)
    console.print(f"report written to [cyan]{out}[/] (knn_report.md, knn_report.json, learning_curves.png)")


@app.command("export")
def export_cmd(
    model: list[str] = typer.Option(None, help="extractor names (default: the served models from settings)"),
    target: str = typer.Option(None, help="cpu (python backend + onnxruntime), gpu (onnxruntime + TensorRT FP16) "
                                          "or tensorrt (a model.plan; needs TensorRT)"),
    repository: Path = typer.Option(None, help="model repository (default: settings.model_repository; "
                                               "model_repository_gpu for gpu targets)"),
    parity: bool = typer.Option(True, help="check ONNX Runtime against torch on real images"),
) -> None:
    """Export extractors to ONNX inside a Triton model repository."""
    from export.repository import export_model
    from server.settings import Settings

    settings = Settings()
    target = target or settings.export_target
    repo = repository or (settings.model_repository if target == "cpu" else Path("model_repository_gpu"))
    for name in model or settings.models:
        result = export_model(name, repo, target, settings, parity=parity)
        checks = ", ".join(f"batch {p.batch}: cos {p.min_cosine:.7f} maxdiff {p.max_abs_diff:.1e}"
                           for p in result.parity)
        console.print(f"[green]exported[/] {name} -> {result.path} ({target}) {checks}")


@app.command("triton")
def triton_cmd(
    repository: Path = typer.Option(None, help="model repository (default: settings.model_repository)"),
    grpc_port: int = typer.Option(None), http_port: int = typer.Option(None),
    metrics_port: int = typer.Option(None),
) -> None:
    """Run the real tritonserver (from the nvidia-pytriton wheel) on the model repository until Ctrl+C."""
    from server.launchers.triton import run_forever

    raise typer.Exit(run_forever(model_repository=repository, grpc_port=grpc_port, http_port=http_port,
                                 metrics_port=metrics_port))


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("reports/demo"), help="where the demo writes its outputs")) -> None:
    """The README's first command: evaluates every available extractor and writes the report."""
    from extractors.knn_report import FMNIST_EXTRACTORS, knn_report

    knn_report(FMNIST_EXTRACTORS, out)
    console.print(f"[green]demo done[/]: outputs in [cyan]{out.resolve()}[/]")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

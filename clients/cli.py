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


def _apply_overrides(cfg, backbone: dict, **fields):
    updates = {k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items() if v is not None}
    return cfg.model_copy(update={**updates, "backbone": cfg.backbone.model_copy(
        update={k: v for k, v in backbone.items() if v is not None})})


def _train(kind: str, preset: str, out: Path | None, resume: bool, backbone: dict, **overrides) -> None:
    from extractors.presets import DINO_PRESETS, SUPERVISED_PRESETS

    presets = DINO_PRESETS if kind == "dino" else SUPERVISED_PRESETS
    if preset not in presets:
        console.print(f"[red]unknown preset {preset!r}[/]; choose one of: {', '.join(presets)}")
        raise typer.Exit(2)
    cfg = _apply_overrides(presets[preset], backbone, **overrides)
    if cfg.images and not Path(cfg.images).is_dir():
        raise typer.BadParameter(f"{cfg.images} is not a folder", param_hint="--images")
    name = Path(cfg.images).resolve().name if cfg.images else cfg.dataset
    out = out or Path("runs") / f"{kind}_{preset}_{name}"
    console.print(f"[bold]{kind}[/] training on [cyan]{cfg.trained_on()}[/], preset [cyan]{preset}[/], "
                  f"writing to [cyan]{out}[/]")
    console.print_json(cfg.model_dump_json())
    try:
        if kind == "dino":
            from extractors.train_dino import train_dino

            record = train_dino(cfg, out, resume=resume)
        else:
            from extractors.train_supervised import train_supervised

            record = train_supervised(cfg, out, resume=resume)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:  # bad input: said before work starts
        console.print(f"[red]cannot train[/]: {e}")
        raise typer.Exit(2) from None
    console.print(f"[green]done[/]: {record}")


_PRESET = typer.Option("fmnist-femto-p7", help="training recipe (extractors/presets.py; `vsearch train presets`)")
_DATASET = typer.Option(None, help="built-in training data set (fashion-mnist)")
_IMAGES = typer.Option(None, help="train on this folder of images instead (recursively; supervised training takes "
                                  "labels from its class sub-folders, DINO never reads them)")
_OUT = typer.Option(None, help="run folder (checkpoint, log.jsonl, weights); default runs/<kind>_<preset>_<data>")
_RESUME = typer.Option(True, help="resume from the run folder's checkpoint when there is one")


def _train_command(kind: str, doc: str):
    def command(
        preset: str = _PRESET, images: Path = _IMAGES, dataset: str = _DATASET, out: Path = _OUT,
        resume: bool = _RESUME,
        monitor_images: Path = typer.Option(None, help="labelled folder the k-NN monitor queries (e.g. a test "
                                                       "split); default: a held-out sample of --images"),
        epochs: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
        train_limit: int = typer.Option(None, help="use the first N training images only"),
        time_limit_min: float = typer.Option(None, help="stop and save after this many minutes"),
        checkpoint_every_min: float = typer.Option(None, help="also save mid-epoch this often"),
        threads: int = typer.Option(None), workers: int = typer.Option(None, help="image-decoding processes"),
        seed: int = typer.Option(None), arch: str = typer.Option(None), patch_size: int = typer.Option(None),
        img_size: int = typer.Option(None), knn_every: int = typer.Option(None),
        init_backbone: str = typer.Option(None, help="start from pre-trained weights: a file (ViT state dict with "
                                                     "official DINO/timm keys, EfficientNet-Lite0) or a registry "
                                                     "name (efficientnet_lite0_imagenet)"),
    ) -> None:
        _train(kind, preset, out, resume, dict(arch=arch, patch_size=patch_size, img_size=img_size),
               images=images, dataset=dataset, monitor_images=monitor_images, epochs=epochs,
               batch_size=batch_size, lr=lr, train_limit=train_limit, time_limit_min=time_limit_min,
               checkpoint_every_min=checkpoint_every_min, threads=threads, workers=workers, seed=seed,
               knn_every=knn_every, init_backbone=init_backbone)

    command.__doc__ = doc
    return command


@train_app.command("presets")
def train_presets() -> None:
    """The named training recipes and what each is sized for."""
    from rich.table import Table

    from extractors.presets import DINO_PRESETS, SUPERVISED_PRESETS, describe

    table = Table("kind", "preset", "network", "input", "epochs", "batch", "for")
    for kind, presets in (("dino", DINO_PRESETS), ("supervised", SUPERVISED_PRESETS)):
        for name, cfg in presets.items():
            table.add_row(kind, name, *describe(name, cfg))
    console.print(table)


train_app.command("dino")(_train_command("dino", "Self-supervised DINO training (no labels are read)."))
train_app.command("supervised")(_train_command(
    "supervised", "Supervised ViT training (cross-entropy on labels): the baseline DINO is compared with."))


@app.command("register")
def register_cmd(
    run: Path = typer.Argument(None, help="a `vsearch train` run folder (its config.json says what the network is)"),
    name: str = typer.Option(..., help="the model's name (lower case, digits, _): Triton's and Milvus' too"),
    domain: str = typer.Option("", help="what the images are, for people choosing a model (e.g. 'brain MRI')"),
    weights: Path = typer.Option(None, help="register a weights file instead of a run: a ViT state dict (official "
                                            "DINO / timm keys) or EfficientNet-Lite0's"),
    arch: str = typer.Option(None, help="with --weights: femto, pico, tiny, small, base or efficientnet_lite0"),
    patch_size: int = typer.Option(16, help="with --weights: the ViT's patch size"),
    input_size: int = typer.Option(224, help="with --weights: the input side in pixels"),
    trained_on: str = typer.Option("", help="with --weights: the data it was trained on"),
    labels_used: bool = typer.Option(False, help="with --weights: it was trained on labels (e.g. ImageNet classes)"),
    to: Path = typer.Option(None, help="models folder (default: VSEARCH_MODELS_DIR, else weights/)"),
) -> None:
    """Make a trained (or your own) network a served extractor: `vsearch export` / `vsearch up` then take NAME."""
    import os

    from extractors.model_cards import ModelCard, card_from_run, write_card
    from extractors.normalization import training_normalization
    from extractors.registry import COMMITTED_WEIGHTS, REGISTRY

    try:
        if weights is not None:
            if arch is None:
                raise ValueError("--weights needs --arch (and --patch-size / --input-size for a ViT)")
            mean, std = training_normalization("user weights", arch=arch)
            card = ModelCard(name=name, arch=arch, patch_size=patch_size if arch != "efficientnet_lite0" else 0,
                             input_size=input_size, mean=mean, std=std, weights=weights.name,
                             trained_on=trained_on, domain=domain, method="pre-trained", labels_used=labels_used)
            source = weights
        elif run is not None:
            card, source = card_from_run(run, name, domain)
        else:
            raise ValueError("give a run folder or --weights FILE")
        root = to or Path(os.environ.get("VSEARCH_MODELS_DIR", COMMITTED_WEIGHTS))
        folder = write_card(card, source, root, set(REGISTRY))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]cannot register[/]: {e}")
        raise typer.Exit(2) from None
    from extractors.model_cards import models_dirs
    from extractors.registry import card_spec, load_extractor, register

    register(card_spec(card, folder))
    try:
        load_extractor(name)  # the card must load the weights it names, now, not at serving time
    except (ValueError, RuntimeError) as e:
        (folder / "model.json").unlink()
        console.print(f"[red]cannot register[/]: {source} does not load as {card.arch}: {e}")
        raise typer.Exit(2) from None
    serve = f"VSEARCH_MODELS='[\"{name}\"]' vsearch up"
    console.print(f"[green]registered[/] {name} in {folder}: {card.arch} at {card.input_size} px, {card.trained_on}."
                  f" Serve it: {serve}")
    if root.resolve() not in {d.resolve() for d in models_dirs(COMMITTED_WEIGHTS)}:
        console.print(f"[yellow]note[/]: set VSEARCH_MODELS_DIR={root} so that every command finds it")


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


@app.command("fit-whitening")
def fit_whitening_cmd(
    model: list[str] = typer.Option(None, help="ViTs to fit (default: every one that serves a whitened descriptor)"),
    images: int = typer.Option(20000, help="Fashion-MNIST training images to learn it on"),
) -> None:
    """Learn the PCA whitening of each ViT's CLS + GeM descriptor on training images (after training it)."""
    from extractors.fit_whitening import fit_whitening, whitened_models

    for name in model or whitened_models():
        console.print(f"[green]whitening[/] {name} -> {fit_whitening(name, images)}")


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
    from launchers.exporting import export_served
    from server.settings import Settings

    settings = Settings()
    target = target or settings.export_target
    repo = repository or (settings.model_repository if target == "cpu" else Path("model_repository_gpu"))
    for name in model or settings.models:
        result = export_served(name, repo, target, settings, parity=parity)
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
    from launchers.triton import run_forever

    raise typer.Exit(run_forever(model_repository=repository, grpc_port=grpc_port, http_port=http_port,
                                 metrics_port=metrics_port))


@app.command("milvus")
def milvus_cmd(
    data_dir: Path = typer.Option(None, help="where Milvus keeps its data (default: settings.milvus_data_dir)"),
    port: int = typer.Option(None, help="client port (default: settings.milvus_port)"),
) -> None:
    """Run the real Milvus standalone server (from the `milvus` wheel) on loopback until Ctrl+C."""
    from launchers.milvus import MilvusServer
    from server.settings import Settings

    settings = Settings()
    server = MilvusServer(data_dir or settings.milvus_data_dir, port=port or settings.milvus_port)
    raise typer.Exit(server.run_forever())


@app.command("serve")
def serve_cmd(port: int = typer.Option(None), triton_url: list[str] = typer.Option(None),
              milvus_uri: str = typer.Option(None),
              runtime: str = typer.Option(None, help="triton (default) or onnxruntime: the exported models run in "
                                                     "this process, no Triton needed")) -> None:
    """Run the gRPC search gateway (settings from VSEARCH_* env vars, overridden by these flags)."""
    from server.app import run
    from server.settings import Settings

    if runtime not in (None, "triton", "onnxruntime"):
        raise typer.BadParameter("triton or onnxruntime", param_hint="--runtime")
    overrides = {k: v for k, v in dict(port=port, triton_urls=triton_url, milvus_uri=milvus_uri,
                                       runtime=runtime).items() if v}
    run(Settings().model_copy(update=overrides))


@app.command("up")
def up_cmd(milvus_uri: str = typer.Option(None, help="use this Milvus instead of starting one"),
           port: int = typer.Option(None, help="gateway port (default: settings.port)"),
           web_port: int = typer.Option(None, help="web page port (default: settings.web_port; 0: no page)")) -> None:
    """Start Triton, Milvus, the gateway and the web page on loopback (exporting models first if needed); Ctrl+C
    stops all."""
    import contextlib
    import signal
    import threading

    from clients.web.serve import WebServer
    from launchers.stack import Stack
    from server.settings import Settings

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = Settings()
    web_port = settings.web_port if web_port is None else web_port
    # The configured metrics port (not a free one), where `vsearch stats` and Prometheus look for it.
    with Stack(settings, milvus_uri=milvus_uri, gateway_port=port or settings.port,
               metrics_port=settings.metrics_port) as stack, \
            (WebServer(stack.address, settings.host, web_port) if web_port else contextlib.nullcontext()) as web:
        console.print(f"[green]up[/]: search at [bold]{stack.address}[/]; Ctrl+C stops everything")
        if web is not None:
            console.print(f"web page: [bold]{web.url}[/] (API docs at {web.url}docs)")
        while not stop.is_set() and stack.running():
            stop.wait(1.0)
    console.print("stopped")


_ADDRESS = typer.Option("127.0.0.1:50051", envvar="VSEARCH_ADDRESS", help="gateway host:port")


@app.command("web")
def web_cmd(address: str = _ADDRESS,
            host: str = typer.Option("127.0.0.1", help="address the page listens on (0.0.0.0 in a container)"),
            port: int = typer.Option(None, help="web page port (default: settings.web_port)")) -> None:
    """Serve only the web page (clients/web), as a client of a gateway that runs elsewhere (`vsearch up` starts both
    on one machine; docker-compose.yml runs this beside the gateway)."""
    import uvicorn

    from clients.web.app import create_app
    from server.settings import Settings

    port = Settings().web_port if port is None else port
    console.print(f"web page: [bold]http://{host}:{port}/[/] (API docs at /docs) for the gateway at {address}")
    uvicorn.run(create_app(address), host=host, port=port, log_level="warning")


def _client(address: str, token: str | None):
    from clients.sdk import SearchClient

    return SearchClient(address, token=token)


def _fail(e: Exception) -> None:
    from clients.sdk import SearchError

    if isinstance(e, SearchError):
        hint = {"UNAVAILABLE": "is the gateway running? start it with `vsearch up`",
                "UNAUTHENTICATED": "pass --token (or set VSEARCH_TOKEN)"}.get(e.code, "")
        console.print(f"[red]{e.code}[/]: {e.details}" + (f"\n{hint}" if hint else ""))
        raise typer.Exit(3 if e.code == "UNAVAILABLE" else 2)
    raise e


_TOKEN = typer.Option(None, envvar="VSEARCH_TOKEN", help="bearer token for mutating calls")


@app.command("models")
def models_cmd(address: str = _ADDRESS, token: str = _TOKEN) -> None:
    """The models the gateway serves, with their dimension and item count."""
    from rich.table import Table

    try:
        models = _client(address, token).list_models()
    except Exception as e:  # noqa: BLE001
        _fail(e)
    table = Table(title=f"models at {address}")
    table.add_column("name", no_wrap=True)
    for col in ("dim", "input", "metric", "items", "verdicts", "for", "trained on"):
        table.add_column(col)
    for m in models:
        c = m.calibration
        verdicts = f"EXACT >= {c['exact_min_score']:.3f}, NEAR >= {c['near_duplicate_min_score']:.3f}" if c else "-"
        table.add_row(m.name, str(m.dim), f"{m.input_size}x{m.input_size}", m.metric, str(m.count), verdicts,
                      m.domain or "-", m.trained_on or "-")
    console.print(table)
    for m in models:
        if m.note:
            console.print(f"[yellow]{m.name}[/]: {m.note}")


@app.command("stats")
def stats_cmd(address: str = _ADDRESS, token: str = _TOKEN,
              metrics_url: str = typer.Option(None, help="the gateway's Prometheus endpoint (default: the gateway's "
                                                         "host at VSEARCH_METRICS_PORT, where `vsearch up` serves it)"),
              ) -> None:
    """Health, items per model and the gateway's request/latency counters."""
    import urllib.request

    from server.settings import Settings

    metrics_url = metrics_url or f"http://{address.rsplit(':', 1)[0]}:{Settings().metrics_port}/metrics"
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from rich.table import Table

    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        console.print(f"health: [bold]{health_pb2.HealthCheckResponse.ServingStatus.Name(status)}[/]")
        models = _client(address, token).list_models()
    except grpc.RpcError as e:
        console.print(f"[red]{e.code().name}[/]: {e.details()}\nis the gateway running? start it with `vsearch up`")
        raise typer.Exit(3) from None
    except Exception as e:  # noqa: BLE001
        _fail(e)
    console.print(", ".join(f"{m.name}: {m.count} items" for m in models))
    try:
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    except OSError as e:
        console.print(f"[yellow]metrics not reachable at {metrics_url}: {e}[/]")
        return
    table = Table(title="requests by method and status")
    for col in ("method", "code", "count"):
        table.add_column(col)
    for line in text.splitlines():
        if line.startswith("vsearch_requests_total{"):
            labels, value = line.split("} ")
            kv = dict(part.split("=") for part in labels.removeprefix("vsearch_requests_total{").split(","))
            table.add_row(kv["method"].strip('"'), kv["code"].strip('"'), str(int(float(value))))
    console.print(table)


@app.command("index")
def index_cmd(
    folder: Path = typer.Argument(None, help="a folder of images (recursive; ids are relative paths)"),
    dataset: str = typer.Option(None, help="fashion-mnist (all 70k: train then test) or photos"),
    model: str = typer.Option(None, help="model to index with (default: the first served model)"),
    limit: int = typer.Option(0, help="index only the first N images"),
    batch_size: int = typer.Option(64), concurrency: int = typer.Option(4),
    resume: bool = typer.Option(True, help="skip ids already stored"),
    duplicate_policy: str = typer.Option("allow", help="near-duplicates of stored items: allow, flag (report), "
                                                       "skip (don't write) or reject (an error per item)"),
    address: str = _ADDRESS, token: str = _TOKEN,
) -> None:
    """Bulk indexing through the gateway: progress bar, concurrency, resumable, summary at the end."""
    from clients.indexing import index_images

    try:
        summary = index_images(_client(address, token), folder, dataset, model, limit, batch_size, concurrency,
                               resume, duplicate_policy)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    console.print(summary)


@app.command("search")
def search_cmd(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="query image file"),
    model: str = typer.Option(None, help="model (default: the first served model)"),
    top_k: int = typer.Option(10), out: Path = typer.Option(None, help="PNG grid of the query and its hits"),
    image_root: Path = typer.Option(None, help="folder the indexed ids are relative to (for the grid)"),
    min_score: float = typer.Option(None, help="only hits scoring at least this (cosine, -1..1)"),
    min_verdict: str = typer.Option(None, help="only hits with this verdict or better: NEAR_DUPLICATE or EXACT"),
    offset: int = typer.Option(0, help="skip this many hits (paging)"),
    address: str = _ADDRESS, token: str = _TOKEN,
) -> None:
    """Search by image: a table of hits and a PNG grid of the query and its results."""
    from clients.results import hits_table, save_grid

    client = _client(address, token)
    try:
        model = model or client.list_models()[0].name
        result = client.search(model, image=image, top_k=top_k, min_score=min_score, min_verdict=min_verdict,
                               offset=offset)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    console.print(hits_table(result, title=f"{image.name} with {model}"))
    path = save_grid(image, result, out or Path("reports") / f"search_{image.stem}_{model}.png", image_root)
    console.print(f"grid written to [cyan]{path}[/]")


@app.command("eval")
def eval_cmd(
    extractor: list[str] = typer.Option(None, help="registry names or 'pixels' (default: pixels, random, DINO, "
                                                   "supervised ViT, EfficientNet)"),
    quick: bool = typer.Option(False, help="small subsets: 5k db / 1k queries / 200 copy sources"),
    out: Path = typer.Option(Path("reports/comparison"), help="results.json, report.md/html, figures/"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(None, help="torch CPU threads"),
    report: bool = typer.Option(True, help="write the report after the run"),
    report_only: bool = typer.Option(False, help="only re-render the report from OUT/results.json"),
    merge: bool = typer.Option(False, help="re-measure only --extractor and merge into OUT/results.json"),
    serving_check: bool = typer.Option(False, help="also measure one extractor through the running stack "
                                                   "(gateway -> Triton -> Milvus) against exact search"),
    representations: bool = typer.Option(True, help="also the graded near-duplicates, semantic bias, label "
                                                     "efficiency, digits transfer and attention (headline.json)"),
    images: Path = typer.Option(None, help="evaluate on this folder of images instead of Fashion-MNIST (class "
                                           "sub-folders add class retrieval); report in reports/domains/<set>/"),
    queries: Path = typer.Option(None, help="with --images: a folder of query images with the same class folders "
                                            "(e.g. a test split); default: a held-out fifth of --images"),
    name: str = typer.Option(None, help="with --images: the set's name (report folder, targets)"),
    copy_sources: int = typer.Option(100, help="with --images: database images turned into graded copies (each x 39 "
                                                "edit levels)"),
    workers: int = typer.Option(1, help="with --images: image-decoding processes"),
    group_pattern: str = typer.Option("", help="with --images and no --queries: hold out whole groups, a regex "
                                               r"whose first group is a file's group (video frames: r'^(\d+)_')"),
) -> None:
    """The comparison: class retrieval and copy detection for every extractor, the representations
    measurements and headline.json, then the reports. With --images: the same questions on your own folder."""
    import torch

    if images is not None:
        if threads:
            torch.set_num_threads(threads)
        _eval_folder(images, queries, name, extractor, quick, copy_sources, workers, seed, out, group_pattern, merge)
        return

    from evaluation.protocol import run_protocol
    from evaluation.report import write_report

    if threads:
        torch.set_num_threads(threads)
    if merge:
        from evaluation.refresh import refresh_extractors

        refresh_extractors(extractor, out, seed)
    elif not report_only:
        run_protocol(extractor or None, quick=quick, out_dir=out, seed=seed)
    if serving_check:
        from clients.serving_check import run as run_serving_check

        run_serving_check(out=out / "serving_check.json")
    if representations:
        from evaluation.representations import run as run_representations

        # --report-only re-renders from the saved measurements (only=[]: measure nothing that is on disk)
        headline = run_representations(out, quick=quick, only=[] if report_only else None)
        for t in headline["targets"]:
            mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "[yellow]not measured[/]"}[t["met"]]
            console.print(f"{mark} {t['target']}: {t.get('measured')} vs {t.get('threshold')}")
    if report or report_only:
        console.print(f"report written to [cyan]{write_report(out)}[/] (and report.html, figures/, explain/)")


def _eval_folder(images: Path, queries: Path | None, name: str | None, extractors: list[str] | None, quick: bool,
                 copy_sources: int, workers: int, seed: int, out: Path, group_pattern: str = "",
                 merge: bool = False) -> None:
    import json

    from evaluation.domain_report import PRETRAINED, merge_results, write_domain_report
    from evaluation.folder_eval import FolderEvalConfig, evaluate_folder
    from extractors.registry import PIXELS

    set_name = name or images.resolve().name
    cfg = FolderEvalConfig(n_sources=copy_sources, quick=quick, seed=seed, workers=workers,
                           group_pattern=group_pattern)
    try:
        result = evaluate_folder(images, extractors or [PIXELS, PRETRAINED], queries, cfg, set_name)
    except (ValueError, NotADirectoryError, KeyError) as e:
        console.print(f"[red]cannot evaluate[/]: {e}")
        raise typer.Exit(2) from None
    folder = out if out != Path("reports/comparison") else Path("reports/domains") / set_name
    if merge and (folder / "results.json").exists():
        result = merge_results(json.loads((folder / "results.json").read_text()), result)
    console.print(f"report written to [cyan]{write_domain_report(result, folder)}[/]")


@app.command("explain")
def explain_cmd(
    image: Path = typer.Argument(..., exists=True, help="an image file"),
    model: str = typer.Option("dino_vit_femto_p7_fmnist", help="extractor: ViTs give attention maps; "
                                                               "the supervised ViT and EfficientNet also Grad-CAM"),
    out: Path = typer.Option(Path("reports/explain"), help="where the PNGs go"),
) -> None:
    """Attention maps / Grad-CAM overlaid on IMAGE, written as PNGs."""
    from evaluation.explain import explain

    for p in explain(image, model, out):
        console.print(f"[cyan]{p}[/]")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("reports/demo"), help="where the demo writes its outputs"),
    limit: int = typer.Option(0, help="index only the first N Fashion-MNIST images (0 = all 70,000)"),
) -> None:
    """The README's first command: the whole stack, indexing, sample queries, an HTML page; then stops."""
    from clients.demo import run_demo

    run_demo(out, fmnist_limit=limit)


# --- Near-duplicates as a product: calibrated verdicts, a dedup gate on upsert, duplicate groups, Embed ---
@app.command("calibrate")
def calibrate_cmd(
    model: list[str] = typer.Option(..., help="extractor(s) to calibrate"),
    dataset: str = typer.Option(None, help="fashion_mnist or photos (default: by the model's input size)"),
    n_db: int = typer.Option(20_000, help="Fashion-MNIST train images in the database"),
    n_originals: int = typer.Option(1_000, help="originals copied at every graded level"),
    n_distinct: int = typer.Option(1_000, help="distinct (test) queries whose best hit is a negative"),
    threads: int = typer.Option(2, help="torch CPU threads"),
) -> None:
    """Fit EXACT / NEAR_DUPLICATE score thresholds per model from the graded copies: writes
    weights/<model>/calibration.json (run `vsearch export` to serve it) and reports/calibration/."""
    import torch

    from evaluation.calibration import calibrate

    torch.set_num_threads(threads)
    for name in model:
        c, _ = calibrate(name, dataset, n_db=n_db, n_originals=n_originals, n_distinct=n_distinct)
        console.print(f"[green]{name}[/]: EXACT >= {c.exact.min_score:.4f} (precision {c.exact.precision:.3f}, "
                      f"recall {c.exact.recall:.3f}); NEAR_DUPLICATE >= {c.near_duplicate.min_score:.4f} "
                      f"(precision {c.near_duplicate.precision:.3f}, recall {c.near_duplicate.recall:.3f})")



@app.command("dedup")
def dedup_cmd(
    model: str = typer.Option(None, help="model whose collection to scan (default: the first served model)"),
    verdict: str = typer.Option("NEAR_DUPLICATE", help="group pairs with this verdict or better (calibrated)"),
    min_score: float = typer.Option(None, help="group pairs scoring at least this instead of a verdict"),
    neighbours: int = typer.Option(0, help="neighbours looked at per item (0: the gateway's default)"),
    out: Path = typer.Option(Path("reports/dedup"), help="duplicates.json and duplicates.html go here"),
    image_root: Path = typer.Option(None, help="folder the indexed ids are relative to (for thumbnails)"),
    address: str = _ADDRESS, token: str = _TOKEN,
) -> None:
    """Every group of near-duplicates in a collection: a progress bar, then duplicates.json and an HTML page of
    the groups with thumbnails side by side."""
    from clients.dedup_report import find_groups, write_html, write_json

    client = _client(address, token)
    try:
        model = model or client.list_models()[0].name
        groups, summary = find_groups(client, model, None if min_score is not None else verdict, min_score,
                                      neighbours)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    console.print(f"{summary['groups']} groups ({summary['pairs']} pairs) among {summary['items']} items at score >= "
                  f"{summary['min_score']:.4f}, in {summary['elapsed_s']:.1f} s")
    console.print(f"[cyan]{write_json(out / 'duplicates.json', model, groups, summary)}[/], "
                  f"[cyan]{write_html(out / 'duplicates.html', model, groups, summary, image_root)}[/]")


@app.command("embed")
def embed_cmd(
    images: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="image files"),
    model: str = typer.Option(None, help="model (default: the first served model)"),
    out: Path = typer.Option(None, help="write the vectors as .npy (default: print a summary)"),
    address: str = _ADDRESS, token: str = _TOKEN,
) -> None:
    """The model's embeddings of the images (the Embed RPC)."""
    import numpy as np

    client = _client(address, token)
    try:
        model = model or client.list_models()[0].name
        vectors = client.embed(model, list(images))
    except Exception as e:  # noqa: BLE001
        _fail(e)
    if out:
        np.save(out, vectors)
        console.print(f"{vectors.shape[0]} x {vectors.shape[1]} float32 written to [cyan]{out}[/]")
    else:
        for path, v in zip(images, vectors, strict=True):
            console.print(f"{path}: dim {len(v)}, [{', '.join(f'{x:.4f}' for x in v[:4])}, ...]")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

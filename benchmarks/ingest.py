"""Bulk indexing end to end: ``vsearch index --dataset fashion-mnist`` through the real stack.

Starts Triton (the served Fashion-MNIST ViT only), a Milvus server on a temporary data dir and the gateway on a free
port, then calls ``clients.indexing.index_images`` -- the function the CLI's ``index`` command calls -- with the CLI's
own defaults (read from ``clients/cli.py``, so the measured run is the one a user gets). Reported: images/s, wall
time, and where the time goes: CPU seconds of each process (client, gateway, Triton with its python-backend stubs,
Milvus), the client's PNG encoding, the gateway's Upsert/Get RPC times (its Prometheus metrics) and Triton's own
statistics (executions, mean batch, compute time).

Then the knobs of ``vsearch index`` (batch size, concurrent streams, and ``--no-resume`` at the default ones) are
compared on a subset, in two rounds of alternating order: before each run the subset's ids are deleted, so every run
indexes the same images into the same collection."""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import CpuMeter, Target, write_result

console = Console()
NAME = "ingest"
DATASET = "fashion-mnist"
# (batch size, concurrent streams, resume check) compared on a subset; the CLI defaults are always added.
SWEEP = ((64, 4, True), (128, 4, True), (64, 8, True), (64, 2, True), (64, 4, False))
QUICK_SWEEP = ((128, 4, True), (64, 4, False))
# After a delete the gateway reads Strong for 6 s (server/vector_store/milvus.py); wait it out so the resume check
# of the next run costs what it costs on a collection nobody just deleted from.
AFTER_DELETE_WAIT_S = 6.5


def cli_defaults() -> tuple[int, int, bool]:
    """``vsearch index``'s default batch size, concurrency and resume flag, read from the command's signature."""
    from clients.cli import index_cmd

    params = inspect.signature(index_cmd).parameters

    def default(name: str):
        d = params[name].default
        return getattr(d, "default", d)

    return int(default("batch_size")), int(default("concurrency")), bool(default("resume"))


class PngTimer:
    """Times the SDK's image -> bytes step (PIL image -> PNG for a data set) during the run, summed over the threads
    that stream the requests. Wraps ``clients.sdk.image_bytes``, which ``upsert_requests`` looks up per item."""

    def __enter__(self) -> PngTimer:
        import clients.sdk as sdk

        self._sdk, self._orig, self.samples = sdk, sdk.image_bytes, []
        orig, samples = self._orig, self.samples

        def timed(image):
            t0 = time.perf_counter()
            try:
                return orig(image)
            finally:
                samples.append(time.perf_counter() - t0)  # list.append is atomic: safe from the stream threads

        sdk.image_bytes = timed
        return self

    def __exit__(self, *exc) -> None:
        self._sdk.image_bytes = self._orig

    @property
    def seconds(self) -> float:
        return sum(self.samples)


def gateway_metrics(port: int) -> dict[str, float]:
    """RPC counts and summed seconds by method from the gateway's Prometheus endpoint ({} when unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vsearch_request_seconds_sum":
                out[f"{s.labels['method']}_s"] = s.value
            elif s.name == "vsearch_request_seconds_count":
                out[f"{s.labels['method']}_n"] = s.value
    return out


def triton_stats(url: str, model: str) -> dict[str, float]:
    import tritonclient.grpc as tclient

    client = tclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    except Exception:  # noqa: BLE001 - the split is a bonus; the run itself must not fail on it
        return {}
    finally:
        client.close()
    st = s.get("inference_stats", {})

    def ns(key: str) -> int:
        return int(st.get(key, {}).get("ns", 0))

    return {"requests": int(st.get("success", {}).get("count", 0)), "inferences": int(s.get("inference_count", 0)),
            "executions": int(s.get("execution_count", 0)), "queue_s": ns("queue") / 1e9,
            "compute_s": (ns("compute_input") + ns("compute_infer") + ns("compute_output")) / 1e9}


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def measure(stack, model: str, n: int, batch_size: int, concurrency: int, resume: bool = True) -> dict:
    """One ``vsearch index --dataset fashion-mnist --limit n`` run through ``stack``, with its split."""
    from clients.indexing import index_images
    from clients.sdk import SearchClient

    pids = {"client": os.getpid(), "gateway": stack.gateway.proc.pid, "triton": stack.triton.pid,
            "milvus": stack.milvus.pid if stack.milvus else None}
    meter = CpuMeter(pids)
    g0, t0 = gateway_metrics(stack.gateway.metrics_port), triton_stats(stack.triton.grpc_url, model)
    meter.start()
    start = time.perf_counter()
    with PngTimer() as png, SearchClient(stack.gateway.address) as client:
        summary = index_images(client, None, DATASET, model, n, batch_size=batch_size, concurrency=concurrency,
                               resume=resume)
    wall = time.perf_counter() - start
    cpu = meter.stop()
    g = _diff(gateway_metrics(stack.gateway.metrics_port), g0)
    t = _diff(triton_stats(stack.triton.grpc_url, model), t0)
    done = max(summary["indexed"], 1)
    row = {"batch_size": batch_size, "concurrency": concurrency, "resume": resume, "images": n,
           "indexed": summary["indexed"],
           "skipped_existing": summary["skipped_existing"], "errors": summary["errors"],
           "seconds": summary["seconds"], "images_per_s": summary["images_per_s"], "wall_s": round(wall, 2),
           "cpu_s": cpu, "cpu_ms_per_image": {k: round(v * 1e3 / done, 3) for k, v in cpu.items()},
           "client_png_encode_s": round(png.seconds, 3),
           "client_png_encode_us_per_image": round(png.seconds * 1e6 / max(len(png.samples), 1), 1)}
    if g.get("Upsert_n"):
        row["gateway"] = {"upsert_rpcs": int(g["Upsert_n"]), "upsert_rpc_s": round(g["Upsert_s"], 2),
                          "upsert_rpc_mean_ms": round(g["Upsert_s"] * 1e3 / g["Upsert_n"], 1),
                          "get_rpcs": int(g.get("Get_n", 0)), "get_rpc_s": round(g.get("Get_s", 0.0), 2),
                          "get_rpc_mean_ms": round(g.get("Get_s", 0.0) * 1e3 / max(g.get("Get_n", 0), 1), 1)}
    if t.get("executions"):
        row["triton"] = {"requests": int(t["requests"]), "executions": int(t["executions"]),
                         "inferences": int(t["inferences"]),
                         "mean_batch": round(t["inferences"] / t["executions"], 1),
                         "compute_s": round(t["compute_s"], 2), "queue_s": round(t["queue_s"], 2),
                         "compute_ms_per_image": round(t["compute_s"] * 1e3 / max(t["inferences"], 1), 3)}
    return row


def _clear(stack, model: str, ids: list[str]) -> None:
    """Deletes ``ids`` through the gateway (so the next run indexes them again), then waits out the Strong-read
    window that follows a delete."""
    from clients.sdk import SearchClient

    with SearchClient(stack.gateway.address) as client:
        for i in range(0, len(ids), 1000):
            client.delete(model, ids[i:i + 1000])
    time.sleep(AFTER_DELETE_WAIT_S)


def _sweep_settings(defaults: tuple[int, int, bool], settings: tuple[tuple[int, int, bool], ...]
                    ) -> list[tuple[int, int, bool]]:
    return list(dict.fromkeys([defaults, *settings]))


def run(quick: bool = False, n_images: int | None = None, sweep_images: int | None = None, rounds: int | None = None,
        sweep: tuple[tuple[int, int, bool], ...] | None = None) -> dict:
    from extractors.datasets import load_fashion_mnist
    from launchers.ports import free_port
    from launchers.stack import Stack
    from server.settings import Settings

    n_images = n_images or (2000 if quick else 70000)
    sweep_images = sweep_images or (1000 if quick else 10000)
    rounds = rounds or (1 if quick else 2)
    sweep = sweep or (QUICK_SWEEP if quick else SWEEP)
    model = Settings().models[0]
    defaults = cli_defaults()
    settings_list = _sweep_settings(defaults, sweep)
    ids = load_fashion_mnist("all").ids[:sweep_images]
    results: dict = {"model": model, "dataset": DATASET, "quick": quick,
                     "cli_defaults": {"batch_size": defaults[0], "concurrency": defaults[1], "resume": defaults[2]}}
    with tempfile.TemporaryDirectory(prefix="vsearch-bench-ingest-") as tmp:
        # Only the model being indexed is loaded into Triton: the gateway serves what Triton has ready.
        settings = Settings(models=[model], milvus_data_dir=Path(tmp) / "milvus")
        with Stack(settings, gateway_port=free_port()) as stack:
            console.print(f"[bold]ingest[/]: {n_images:,} images with the CLI defaults (batch {defaults[0]}, "
                          f"{defaults[1]} streams) into an empty collection")
            results["headline"] = measure(stack, model, n_images, *defaults)
            _print_row("headline", results["headline"])
            runs: dict[tuple[int, int, bool], list[dict]] = {s: [] for s in settings_list}
            for r in range(rounds):
                # every other round in reverse order, so a drift in the machine's load does not favour one setting
                for b, c, resume in settings_list if r % 2 == 0 else settings_list[::-1]:
                    _clear(stack, model, ids)
                    label = _label(b, c, resume)
                    console.print(f"[bold]ingest sweep[/] round {r + 1}/{rounds}: {sweep_images:,} images, {label}")
                    row = measure(stack, model, sweep_images, b, c, resume)
                    _print_row(label, row)
                    runs[(b, c, resume)].append(row)
    results["sweep"] = {"images": sweep_images, "rounds": rounds,
                        "settings": [_sweep_summary(key, rows, defaults) for key, rows in runs.items()]}
    # The best batch size and concurrency with the resume check as the CLI has it; --no-resume is a different job.
    same = [s for s in results["sweep"]["settings"] if s["resume"] == defaults[2]]
    best = max(same, key=lambda s: s["images_per_s_mean"])
    results["sweep"]["best"] = {k: v for k, v in best.items() if k != "runs"}
    _print(results)
    console.print(f"written to {write_result(NAME, results)}")
    return results


def _label(batch_size: int, concurrency: int, resume: bool = True) -> str:
    return f"batch {batch_size}, {concurrency} streams" + ("" if resume else ", --no-resume")


def _sweep_summary(key: tuple[int, int, bool], rows: list[dict], defaults: tuple[int, int, bool]) -> dict:
    ips = [r["images_per_s"] for r in rows]
    b, c, resume = key
    return {"batch_size": b, "concurrency": c, "resume": resume, "is_default": key == defaults, "images_per_s": ips,
            "images_per_s_mean": round(statistics.fmean(ips), 1), "images_per_s_min": min(ips),
            "images_per_s_max": max(ips), "indexed": [r["indexed"] for r in rows],
            "errors": sum(r["errors"] for r in rows),
            "cpu_ms_per_image": {k: round(statistics.fmean(r["cpu_ms_per_image"][k] for r in rows), 3)
                                 for k in rows[0]["cpu_ms_per_image"]},
            "runs": rows}


def _print_row(label: str, r: dict) -> None:
    console.print(f"{label}: {r['indexed']:,}/{r['images']:,} indexed, {r['images_per_s']} images/s, "
                  f"{r['seconds']} s (wall {r['wall_s']} s), {r['errors']} errors")


def _print(results: dict) -> None:
    h = results["headline"]
    table = Table(title=f"vsearch index: {h['indexed']:,} images, {h['images_per_s']} images/s")
    for col in ("process", "CPU s", "CPU ms/image"):
        table.add_column(col)
    for k, v in h["cpu_s"].items():
        table.add_row(k, str(v), str(h["cpu_ms_per_image"][k]))
    console.print(table)
    table = Table(title=f"knobs: {results['sweep']['images']:,} images, {results['sweep']['rounds']} round(s)")
    for col in ("batch", "streams", "resume", "images/s mean", "min", "max", "default"):
        table.add_column(col)
    for s in results["sweep"]["settings"]:
        table.add_row(str(s["batch_size"]), str(s["concurrency"]), str(s["resume"]), str(s["images_per_s_mean"]),
                      str(s["images_per_s_min"]), str(s["images_per_s_max"]), "yes" if s["is_default"] else "")
    console.print(table)


def _compare(a: dict, b: dict, rounds: int) -> tuple[float, bool, str]:
    """``a`` vs ``b``: relative gain, whether it is beyond the noise, and why."""
    gain = a["images_per_s_mean"] / max(b["images_per_s_mean"], 1e-9) - 1
    if rounds > 1:
        if a["images_per_s_min"] > b["images_per_s_max"]:
            return gain, True, "every run of it beat every run of the defaults"
        return gain, False, "the runs overlap: within the run-to-run spread"
    if abs(gain) > 0.10:
        return gain, True, "more than 10%, one round only"
    return gain, False, "under 10% with one round: within noise"


def verdict(result: dict) -> str:
    """Whether the best batch size / concurrency beats the CLI defaults by more than the runs' own spread, and what
    the resume check costs."""
    sweep = result["sweep"]
    default = next((s for s in sweep["settings"] if s["is_default"]), None)
    if default is None:
        return ""
    best = sweep["best"]
    if best["is_default"]:
        out = (f"Best batch size and concurrency: the CLI defaults ({_label(best['batch_size'], best['concurrency'])},"
               f" {best['images_per_s_mean']:.0f} images/s): keep them.")
    else:
        gain, beyond, why = _compare(best, default, sweep["rounds"])
        advice = "worth making it the CLI default" if beyond else "keep the CLI defaults"
        out = (f"Best batch size and concurrency: {_label(best['batch_size'], best['concurrency'])} at "
               f"{best['images_per_s_mean']:.0f} images/s, {gain:+.0%} over the CLI defaults ({why}): {advice}.")
    other = next((s for s in sweep["settings"] if (s["batch_size"], s["concurrency"]) == (default["batch_size"],
                  default["concurrency"]) and s["resume"] != default["resume"]), None)
    if other is not None and default["resume"]:
        gain, beyond, why = _compare(other, default, sweep["rounds"])
        out += (f" Without the resume check (`--no-resume`, same batch and streams): "
                f"{other['images_per_s_mean']:.0f} images/s, {gain:+.0%} ({why})"
                + ("; it is what makes an interrupted run cheap to restart, so it stays the default, and "
                   "`--no-resume` is worth passing for a first load into an empty collection." if beyond and gain > 0
                   else "."))
    return out


def targets(result: dict) -> list[Target]:
    return []  # the issue sets no indexing target; the section states images/s


def markdown(result: dict) -> str:
    h = result["headline"]
    d = result["cli_defaults"]
    cores = (result.get("machine") or {}).get("cpus")
    lines = [
        "## Indexing through the gateway (`benchmarks/ingest.py`)",
        "",
        f"`vsearch index --dataset {result['dataset']}` -- the function the CLI calls (`clients/indexing.py`), with "
        f"its defaults (batches of {d['batch_size']}, {d['concurrency']} concurrent streams) -- indexing "
        f"{h['images']:,} Fashion-MNIST images with {result['model']} into an empty Milvus collection through the "
        "gateway (PNG bytes over gRPC; Triton embeds, Milvus stores; the resume check reads stored ids once per 256). "
        f"**{h['images_per_s']:,.0f} images/s**: {h['indexed']:,} indexed in {h['seconds']:.1f} s "
        f"({h['wall_s']:.1f} s wall including loading the data set), {h['errors']} errors"
        + (" (quick run)." if result.get("quick") else "."),
        "",
        "Where the time goes: CPU time of each process during the run"
        + (f" ({cores} cores for {h['wall_s']:.0f} s wall = {cores * h['wall_s']:.0f} core-seconds)" if cores else "")
        + ".",
        "",
        "| process | CPU s | CPU ms/image |",
        "|---|---|---|",
    ]
    for k, v in h["cpu_s"].items():
        lines.append(f"| {k} | {v:.1f} | {h['cpu_ms_per_image'][k]:.2f} |")
    total = sum(h["cpu_s"].values())
    lines.append(f"| all | {total:.1f} | {total * 1e3 / max(h['indexed'], 1):.2f} |")
    lines += ["", f"Client: encoding the images to PNG took {h['client_png_encode_s']:.1f} s "
              f"({h['client_png_encode_us_per_image']:.0f} us/image, summed over the streaming threads) of its "
              f"{h['cpu_s'].get('client', 0):.1f} CPU s."]
    if "gateway" in h:
        g = h["gateway"]
        lines[-1] += (f" Gateway (its Prometheus metrics): {g['upsert_rpcs']:,} Upsert streams of up to "
                      f"{d['batch_size']} images, {g['upsert_rpc_mean_ms']:.0f} ms each on average (from the first "
                      f"request to the reply, so including the client's streaming), {g['get_rpcs']:,} resume-check "
                      f"Gets of {g['get_rpc_mean_ms']:.0f} ms on average ({g['get_rpc_s']:.1f} s in all; the first "
                      "one also creates and loads the collection; the client sends them one after the other).")
    if "triton" in h:
        t = h["triton"]
        lines[-1] += (f" Triton: {t['executions']:,} executions for {t['inferences']:,} images (mean batch "
                      f"{t['mean_batch']:.1f}), {t['compute_s']:.1f} s computing ({t['compute_ms_per_image']:.2f} "
                      f"ms/image) and {t['queue_s']:.1f} s queued.")
    s = result["sweep"]
    lines += ["", "The knobs of `vsearch index` (`--batch-size`, `--concurrency`, `--no-resume`), each indexing the "
              f"first {s['images']:,} images again after they were deleted, {s['rounds']} round(s)"
              + (" (alternating order)" if s["rounds"] > 1 else "") + ":", "",
              "| batch | streams | resume check | images/s (mean) | runs | resume Gets (s) | CPU ms/image "
              "(client / gateway / Triton / Milvus) |",
              "|---|---|---|---|---|---|---|"]
    for row in s["settings"]:
        cpu = row["cpu_ms_per_image"]
        split = " / ".join(f"{cpu[k]:.2f}" if k in cpu else "-" for k in ("client", "gateway", "triton", "milvus"))
        mark = " (CLI default)" if row["is_default"] else ""
        runs = ", ".join(f"{x:.0f}" for x in row["images_per_s"])
        gets = ", ".join(f"{r['gateway']['get_rpc_s']:.1f}" if "gateway" in r else "-" for r in row["runs"])
        resume = "yes" if row.get("resume", True) else "no"
        lines.append(f"| {row['batch_size']}{mark} | {row['concurrency']} | {resume} | "
                     f"{row['images_per_s_mean']:.0f} | {runs} | {gets} | {split} |")
    v = verdict(result)
    if v:
        lines += ["", v]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 images, knobs on 1,000 (a smoke run)")
    p.add_argument("--images", type=int, help="images in the headline run (default 70,000; quick 2,000)")
    p.add_argument("--sweep-images", type=int, help="images per knob setting (default 10,000; quick 1,000)")
    p.add_argument("--rounds", type=int, help="rounds over the knob settings (default 2; quick 1)")
    a = p.parse_args()
    run(a.quick, a.images, a.sweep_images, a.rounds)

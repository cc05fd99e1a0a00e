"""The ingest benchmark's BENCHMARKS.md section and verdict on the knobs, from the result."""

from __future__ import annotations

from benchmarks.common import Target, cpu_split, section
from evaluation.document import Doc


def label(batch_size: int, concurrency: int, resume: bool = True) -> str:
    return f"batch {batch_size}, {concurrency} streams" + ("" if resume else ", --no-resume")


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
    default = next(s for s in sweep["settings"] if s["is_default"])
    best = sweep["best"]
    if best["is_default"]:
        out = (f"Best batch size and concurrency: the CLI defaults ({label(best['batch_size'], best['concurrency'])},"
               f" {best['images_per_s_mean']:.0f} images/s): keep them.")
    else:
        gain, beyond, why = _compare(best, default, sweep["rounds"])
        advice = "worth making it the CLI default" if beyond else "keep the CLI defaults"
        out = (f"Best batch size and concurrency: {label(best['batch_size'], best['concurrency'])} at "
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


def _how(result: dict) -> tuple[str, str, str]:
    """What ran (the CLI's process, ``"cli"`` recorded; older results: the function it calls, in this process), what
    its wall time includes, and how the PNG encoding was timed."""
    if result.get("cli"):
        return (f"run as a user runs it (`{result['cli']}`, a process of its own)",
                "starting Python and loading the data set", "on one thread, measured apart in the benchmark's "
                "process with the same PIL call")
    return ("the function the CLI calls (`clients/indexing.py`)", "loading the data set",
            "summed over the streaming threads")


def _headline(doc: Doc, result: dict) -> None:
    h = result["headline"]
    d = result["cli_defaults"]
    cores = (result.get("machine") or {}).get("cpus")
    what, wall, png = _how(result)
    doc.p(f"`vsearch index --dataset {result['dataset']}` -- {what}, with "
          f"its defaults (batches of {d['batch_size']}, {d['concurrency']} concurrent streams) -- indexing "
          f"{h['images']:,} Fashion-MNIST images with {result['model']} into an empty Milvus collection through the "
          "gateway (PNG bytes over gRPC; Triton embeds, Milvus stores; the resume check reads stored ids once per "
          "256). "
          f"**{h['images_per_s']:,.0f} images/s**: {h['indexed']:,} indexed in {h['seconds']:.1f} s "
          f"({h['wall_s']:.1f} s wall including {wall}), {h['errors']} errors"
          + (" (quick run)." if result.get("quick") else "."))
    doc.p("Where the time goes: CPU time of each process during the run"
          + (f" ({cores} cores for {h['wall_s']:.0f} s wall = {cores * h['wall_s']:.0f} core-seconds)" if cores else "")
          + ".")
    total = sum(h["cpu_s"].values())
    doc.table(["process", "CPU s", "CPU ms/image"],
              [[k, f"{v:.1f}", f"{h['cpu_ms_per_image'][k]:.2f}"] for k, v in h["cpu_s"].items()]
              + [["all", f"{total:.1f}", f"{total * 1e3 / max(h['indexed'], 1):.2f}"]])
    text = (f"Client: encoding the images to PNG took {h['client_png_encode_s']:.1f} s "
            f"({h['client_png_encode_us_per_image']:.0f} us/image, {png}) of its "
            f"{h['cpu_s'].get('client', 0):.1f} CPU s.")
    if "gateway" in h:
        g = h["gateway"]
        text += (f" Gateway (its Prometheus metrics): {g['upsert_rpcs']:,} Upsert streams of up to "
                 f"{d['batch_size']} images, {g['upsert_rpc_mean_ms']:.0f} ms each on average (from the first "
                 f"request to the reply, so including the client's streaming), {g['get_rpcs']:,} resume-check "
                 f"Gets of {g['get_rpc_mean_ms']:.0f} ms on average ({g['get_rpc_s']:.1f} s in all; the first "
                 "one also creates and loads the collection; the client sends them one after the other).")
    if "triton" in h:
        t = h["triton"]
        text += (f" Triton: {t['executions']:,} executions for {t['inferences']:,} images (mean batch "
                 f"{t['mean_batch']:.1f}), {t['compute_s']:.1f} s computing ({t['compute_ms_per_image']:.2f} "
                 f"ms/image) and {t['queue_s']:.1f} s queued.")
    doc.p(text)


def _sweep(doc: Doc, result: dict) -> None:
    s = result["sweep"]
    doc.p("The knobs of `vsearch index` (`--batch-size`, `--concurrency`, `--no-resume`), each indexing the "
          f"first {s['images']:,} images again after they were deleted, {s['rounds']} round(s)"
          + (" (alternating order)" if s["rounds"] > 1 else "") + ":")
    rows = []
    for row in s["settings"]:
        mark = " (CLI default)" if row["is_default"] else ""
        runs = ", ".join(f"{x:.0f}" for x in row["images_per_s"])
        gets = ", ".join(f"{r['gateway']['get_rpc_s']:.1f}" if "gateway" in r else "-" for r in row["runs"])
        resume = "yes" if row.get("resume", True) else "no"
        rows.append([f"{row['batch_size']}{mark}", str(row["concurrency"]), resume,
                     f"{row['images_per_s_mean']:.0f}", runs, gets, cpu_split(row["cpu_ms_per_image"])])
    doc.table(["batch", "streams", "resume check", "images/s (mean)", "runs", "resume Gets (s)",
               "CPU ms/image (client / gateway / Triton / Milvus)"], rows)


def markdown(result: dict) -> str:
    return section("Indexing through the gateway (`benchmarks/ingest/`)", result, _headline, _sweep,
                   lambda doc, r: doc.p(verdict(r)))

"""A bounded soak: a steady mixed search/upsert rate against a gateway process, zero unexpected errors, and
the gateway's resident memory flat. ``VSEARCH_SOAK_S`` sets the duration (the suite: 20 s; ``make soak``:
300 s); the measured rate, errors and memory growth are printed and written to the test's tmp folder."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import grpc
import numpy as np

from extractors.datasets import load_fashion_mnist
from launchers.gateway import GatewayProcess
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import VIT_MODEL
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

SOAK_S = float(os.environ.get("VSEARCH_SOAK_S", "20"))
RATE_PER_S = 40  # a steady offered load, well under what 2 cores sustain, so errors mean bugs, not overload
MAX_GROWTH_MB = 40.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_steady_mixed_load_has_no_errors_and_flat_memory(triton, milvus_server, tmp_path):
    ds = load_fashion_mnist("test").subset(range(64))
    images = [png_bytes(ds.pil(i)) for i in range(len(ds))]
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    with GatewayProcess([triton.grpc_url], milvus_server.uri) as gateway:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(gateway.address))
        stub.Upsert(iter(pb.UpsertRequest(model=VIT_MODEL, id=f"{prefix}-{i}", image=images[i]) for i in range(64)),
                    timeout=60)
        errors: list[str] = []
        done = [0]
        stop = time.monotonic() + SOAK_S + 5  # 5 s of warm-up before the first memory sample

        def worker(w: int) -> None:
            n = 0
            next_at = time.monotonic()
            while (now := time.monotonic()) < stop:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += 4 / RATE_PER_S  # 4 workers share the rate
                try:
                    if n % 5 == 4:  # one call in five writes (re-upserts the same ids: idempotent)
                        item = pb.UpsertRequest(model=VIT_MODEL, id=f"{prefix}-{(w * 7 + n) % 64}",
                                                image=images[(w + n) % 64])
                        reply = stub.Upsert(iter([item]), timeout=10)
                        assert reply.upserted == 1 and not reply.errors
                    else:
                        r = stub.Search(pb.SearchRequest(model=VIT_MODEL, image=images[(w + n) % 64], top_k=10),
                                        timeout=10)
                        assert r.hits
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e)[:200])
                n += 1

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(5)
        samples = [rss_mb(gateway.proc.pid)]
        t0 = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            samples.append(rss_mb(gateway.proc.pid))
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0 + 5
        deleted = stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=[f"{prefix}-{i}" for i in range(64)]), timeout=30)
    growth = samples[-1] - samples[0]
    result = {"seconds": round(elapsed, 1), "calls": done[0], "rate_per_s": round(done[0] / elapsed, 1),
              "errors": len(errors), "rss_start_mb": round(samples[0], 1), "rss_end_mb": round(samples[-1], 1),
              "rss_growth_mb": round(growth, 1), "rss_max_mb": round(float(np.max(samples)), 1)}
    (tmp_path / "soak.json").write_text(json.dumps(result))
    print("soak:", result)
    assert not errors, errors[:5]
    assert deleted.deleted == 64
    assert growth < MAX_GROWTH_MB, result

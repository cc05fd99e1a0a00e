"""Fault injection on real processes: Triton killed under load, the gateway SIGKILLed or SIGTERMed, Milvus
stopped or killed under load. Every fault hits private servers started here (a module Triton on the session's
exported repository, a module Milvus on a tmp folder, gateways per test), never the session's shared ones."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from extractors.datasets import load_fashion_mnist
from launchers.gateway import GatewayProcess
from launchers.milvus import MilvusServer
from launchers.triton import TritonServer
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, VIT_MODEL
from tests.fixtures.triton import start_triton
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE_S = 5.0  # the client deadline of every call under load
SLACK_S = 1.0
LOAD_S = float(os.environ.get("VSEARCH_FAULT_LOAD_S", "2"))  # load after each fault; `make soak` raises it
FAST_ENV = {"VSEARCH_TRITON_TIMEOUT_S": "2", "VSEARCH_HEALTH_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def private_triton(exported_repository) -> Iterator[TritonServer]:
    repo, _ = exported_repository
    server = start_triton(repo)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_milvus(tmp_path_factory) -> Iterator[MilvusServer]:
    server = MilvusServer(tmp_path_factory.mktemp("milvus_faults"), startup_timeout_s=180)
    try:
        server.start()
        yield server
    finally:
        server.kill()  # a private, throwaway database: no need to wait for a graceful stop


@pytest.fixture(scope="module")
def fmnist_pngs() -> list[bytes]:
    ds = load_fashion_mnist("test").subset(range(64))
    return [png_bytes(ds.pil(i)) for i in range(len(ds))]


def stub_for(address: str) -> search_pb2_grpc.SearchServiceStub:
    return search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))


def model_dim(stub, model: str = VIT_MODEL) -> int:
    return {m.name: m.dim for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}[model]


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` was true, or None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval_s)
    return None


def since(t0: float, waited: float | None) -> float | None:
    """Seconds from ``t0`` to now when ``waited`` succeeded (the fault itself can take a while), else None."""
    return None if waited is None else time.monotonic() - t0


@dataclass
class Call:
    start: float
    end: float
    code: grpc.StatusCode
    details: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


def load(stub, make_request, threads: int, stop: threading.Event) -> tuple[list[Call], list[threading.Thread]]:
    """``threads`` threads calling Search in a loop until ``stop``; returns the (growing) list of calls."""
    calls: list[Call] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        i = seed
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                stub.Search(make_request(i), timeout=DEADLINE_S)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            with lock:
                calls.append(Call(t0, time.monotonic(), code, details))
            i += threads
            if code != grpc.StatusCode.OK:
                time.sleep(0.05)  # a client backs off a little; keeps the 2 cores for the servers

    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    return calls, workers


def upsert_vectors(stub, ids: list[str], dim: int, seed: int = 0, chunk: int = 50) -> list[str]:
    """Upserts random vectors in streams of ``chunk``; returns the ids the gateway acknowledged."""
    rng = np.random.default_rng(seed)
    acked: list[str] = []
    for k in range(0, len(ids), chunk):
        part = ids[k:k + chunk]
        items = [pb.UpsertRequest(model=VIT_MODEL, id=i, vector=pb.Vector(values=rng.normal(size=dim).tolist()),
                                  metadata={"tag": pb.Value(string_value="fault")}) for i in part]
        reply = stub.Upsert(iter(items), timeout=60)
        assert reply.upserted == len(part) and not reply.errors, reply
        acked += part
    return acked


def missing_ids(stub, ids: list[str]) -> list[str]:
    found: set[str] = set()
    for k in range(0, len(ids), 500):
        reply = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=ids[k:k + 500]), timeout=60)
        found |= {item.id for item in reply.items}
    return [i for i in ids if i not in found]


# --------------------------------------------------------------------------------------------------------- Triton


def test_triton_killed_under_load_fails_fast_and_recovers_without_a_gateway_restart(
        private_triton, private_milvus, fmnist_pngs, record_property):
    with GatewayProcess([private_triton.grpc_url], private_milvus.uri, env=FAST_ENV) as gw:
        stub = stub_for(gw.address)
        stub.Search(pb.SearchRequest(model=VIT_MODEL, image=fmnist_pngs[0]), timeout=30)  # warm
        stop = threading.Event()
        calls, workers = load(stub, lambda i: pb.SearchRequest(model=VIT_MODEL, image=fmnist_pngs[i % 64]), 4, stop)
        try:
            time.sleep(1.0)
            t_kill = time.monotonic()
            private_triton.kill()
            not_serving_s = since(t_kill, wait_for(lambda: gw.health() == NOT_SERVING, 5.0))
            time.sleep(max(0.0, t_kill + LOAD_S - time.monotonic()))
        finally:
            stop.set()
            for w in workers:
                w.join(DEADLINE_S + 5)
            if not private_triton.is_running():
                t_restart = time.monotonic()
                private_triton.restart()
                triton_start_s = time.monotonic() - t_restart
        assert not any(w.is_alive() for w in workers), "a call hung past its deadline"
        before = [c for c in calls if c.end < t_kill]
        after = [c for c in calls if c.end >= t_kill]
        assert before and all(c.code == grpc.StatusCode.OK for c in before), [c.code for c in before]
        failed = [c for c in after if c.code != grpc.StatusCode.OK]
        assert failed, "no call failed after Triton was killed"
        assert {c.code for c in failed} == {grpc.StatusCode.UNAVAILABLE}, {(c.code, c.details) for c in failed}
        assert all("embedding service" in c.details for c in failed), {c.details for c in failed}
        # Calls that started after the kill all fail, and every failure comes back well inside the deadline.
        assert all(c.code == grpc.StatusCode.UNAVAILABLE for c in after if c.start > t_kill + 0.5)
        worst = max(c.seconds for c in failed)
        assert worst <= DEADLINE_S + SLACK_S, worst
        assert not_serving_s is not None and not_serving_s <= 3.0, not_serving_s

        # Same ports: the same gateway serves again, no restart of its own.

        def searches() -> bool:
            try:
                stub.Search(pb.SearchRequest(model=VIT_MODEL, image=fmnist_pngs[1]), timeout=DEADLINE_S)
                return True
            except grpc.RpcError:
                return False

        recovered_s = wait_for(searches, 30.0, 0.2)
        assert recovered_s is not None, gw.log_tail()
        assert wait_for(lambda: gw.health() == SERVING, 5.0) is not None
        median = sorted(c.seconds for c in failed)[len(failed) // 2]
        record_property("triton_fail_fast_max_s", round(worst, 3))
        record_property("triton_fail_fast_median_s", round(median, 3))
        record_property("triton_not_serving_after_s", round(not_serving_s, 2))
        record_property("triton_restart_s", round(triton_start_s, 2))
        record_property("triton_recovered_after_restart_s", round(recovered_s, 2))
        print(f"\n[triton kill] {len(calls)} calls, {len(failed)} failed: max {worst:.3f} s, median {median:.3f} s; "
              f"NOT_SERVING after {not_serving_s:.2f} s; triton restart {triton_start_s:.1f} s; "
              f"gateway served again {recovered_s:.2f} s later")


# -------------------------------------------------------------------------------------------------------- Gateway


def test_gateway_sigkilled_right_after_acks_loses_nothing(private_triton, private_milvus, fmnist_pngs):
    gw = GatewayProcess([private_triton.grpc_url], private_milvus.uri, env=FAST_ENV)
    try:
        gw.start()
        stub = stub_for(gw.address)
        prefix = f"kill9-{uuid.uuid4().hex[:8]}"
        acked = upsert_vectors(stub, [f"{prefix}-v{i}" for i in range(300)], model_dim(stub), seed=1)
        images = [pb.UpsertRequest(model=VIT_MODEL, id=f"{prefix}-img{i}", image=fmnist_pngs[i]) for i in range(16)]
        reply = stub.Upsert(iter(images), timeout=60)
        assert reply.upserted == len(images) and not reply.errors
        acked += [r.id for r in images]
        gw.kill()  # SIGKILL, the instant the last ack arrived
        assert gw.proc.returncode == -9
        gw.start()
        assert missing_ids(stub_for(gw.address), acked) == []
    finally:
        gw.stop()


def test_sigterm_drains_the_in_flight_call_then_exits_0(private_triton, private_milvus, fmnist_pngs, record_property):
    grace = 30.0
    # A generous Triton timeout: on two busy cores the batch's one embedding call can take well over 2 s.
    gw = GatewayProcess([private_triton.grpc_url], private_milvus.uri,
                        env={"VSEARCH_TRITON_TIMEOUT_S": "60", "VSEARCH_SHUTDOWN_GRACE_S": str(grace)})
    try:
        gw.start()
        stub = stub_for(gw.address)
        # The EfficientNet at 224 px on 64 images: seconds of work on two cores.
        batch = pb.SearchBatchRequest(queries=[pb.SearchRequest(model=CNN_MODEL, image=png, top_k=3)
                                               for png in fmnist_pngs])
        stub.Search(pb.SearchRequest(model=CNN_MODEL, image=fmnist_pngs[0]), timeout=60)  # warm
        t_call = time.monotonic()
        future = stub.SearchBatch.future(batch, timeout=120)
        time.sleep(0.3)
        assert not future.done(), "the batch finished before SIGTERM: make it slower"
        t_term = time.monotonic()
        gw.proc.terminate()
        reply = future.result()
        t_done = time.monotonic()
        assert len(reply.results) == 64 and all(r.model == CNN_MODEL for r in reply.results)
        code = gw.proc.wait(timeout=grace + 10)
        t_exit = time.monotonic()
        assert code == 0, gw.log_tail()
        assert t_exit - t_term <= grace + 2.0, t_exit - t_term
        # A new call after the drain is refused, not hung.
        with pytest.raises(grpc.RpcError) as e:
            stub_for(gw.address).Search(pb.SearchRequest(model=VIT_MODEL, image=fmnist_pngs[0]), timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        record_property("drain_call_s", round(t_done - t_call, 2))
        record_property("drain_exit_after_sigterm_s", round(t_exit - t_term, 2))
        print(f"\n[sigterm] batch took {t_done - t_call:.2f} s (SIGTERM at {t_term - t_call:.2f} s); "
              f"exit 0 {t_exit - t_term:.2f} s after SIGTERM (grace {grace:.0f} s)")
    finally:
        gw.stop()


# --------------------------------------------------------------------------------------------------------- Milvus


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_milvus_down_under_load_is_unavailable_then_recovers_with_every_item(
        private_triton, private_milvus, fault, record_property):
    with GatewayProcess([private_triton.grpc_url], private_milvus.uri, env=FAST_ENV) as gw:
        stub = stub_for(gw.address)
        dim = model_dim(stub)
        acked = upsert_vectors(stub, [f"milvus-{fault}-{uuid.uuid4().hex[:8]}-{i}" for i in range(200)], dim, seed=2)
        rng = np.random.default_rng(3)
        queries = [rng.normal(size=dim).tolist() for _ in range(16)]
        stop = threading.Event()
        calls, workers = load(stub, lambda i: pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(
            values=queries[i % 16]), top_k=5), 2, stop)
        try:
            time.sleep(0.5)
            t_down = time.monotonic()
            getattr(private_milvus, fault)()
            down_s = time.monotonic() - t_down
            not_serving_s = since(t_down, wait_for(lambda: gw.health() == NOT_SERVING, 10.0))
            t_seen = wait_for(lambda: any(c.code == grpc.StatusCode.UNAVAILABLE for c in list(calls)), 20.0)
            time.sleep(LOAD_S)  # load goes on against the dead database
        finally:
            stop.set()
            for w in workers:
                w.join(DEADLINE_S + 5)
            if not private_milvus.running:
                private_milvus.start()
        t_up = time.monotonic()
        assert not any(w.is_alive() for w in workers), "a call hung past its deadline"
        assert not_serving_s is not None, gw.log_tail()
        assert t_seen is not None, {(c.code, c.details) for c in calls}
        failed = [c for c in calls if c.end > t_down and c.code != grpc.StatusCode.OK]
        allowed = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}  # DEADLINE: in flight at the stop
        assert failed and {c.code for c in failed} <= allowed, {(c.code, c.details) for c in failed}
        # Once the database is gone, every call fails fast with UNAVAILABLE.
        assert all(c.code == grpc.StatusCode.UNAVAILABLE for c in calls if c.start > t_down + down_s + 0.5)
        unavailable = [c for c in failed if c.code == grpc.StatusCode.UNAVAILABLE]
        assert unavailable and all("vector database" in c.details for c in unavailable), \
            {c.details for c in unavailable}
        worst = max(c.seconds for c in failed)
        assert worst <= DEADLINE_S + SLACK_S, worst

        def searches() -> bool:
            try:
                stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=queries[0]), top_k=5),
                            timeout=DEADLINE_S)
                return True
            except grpc.RpcError:
                return False

        recovered_s = wait_for(searches, 30.0, 0.5)
        assert recovered_s is not None, gw.log_tail()
        assert wait_for(lambda: gw.health() == SERVING, 10.0) is not None
        assert missing_ids(stub, acked) == []
        milvus_start_s = t_up - (t_down + down_s)
        record_property(f"milvus_{fault}_fail_max_s", round(worst, 3))
        record_property(f"milvus_{fault}_recovered_s", round(recovered_s, 2))
        codes = sorted({c.code.name for c in failed})
        print(f"\n[milvus {fault}] {fault} took {down_s:.1f} s; NOT_SERVING after {not_serving_s:.2f} s; "
              f"{len(failed)} failed calls ({len(unavailable)} UNAVAILABLE, codes {codes}), max {worst:.3f} s; "
              f"Milvus start {private_milvus.last_start_s:.1f} s (window {milvus_start_s:.1f} s); "
              f"gateway searched again {recovered_s:.2f} s after Milvus was ready")

"""Locust load test for the gateway, over gRPC with the generated stubs.

    .venv/bin/locust -f clients/loadtest/locustfile.py --host 127.0.0.1:50051 -u 50 -r 10 -t 2m --stop-timeout 15 \
        --headless

Each simulated user runs a weighted mix: search by image (6), search by id (3), upsert of a small batch (1).
Every call is reported to locust's statistics as request type ``grpc``. Settings (environment variables):

    VSEARCH_LOADTEST_MODEL        model to query (default: the first model from ListModels that holds items,
                                  else the first one)
    VSEARCH_LOADTEST_IDS_PREFIX   ids of indexed items are PREFIX + 5-digit index (default ``fmnist-test-``, as
    VSEARCH_LOADTEST_IDS_COUNT    ``vsearch index`` names Fashion-MNIST) for indexes 0..COUNT-1 (default 1000);
                                  the ones that exist (checked once with Get) are queried, else the items this
                                  run upserted
    VSEARCH_LOADTEST_TOP_K        hits per search (default 10)
    VSEARCH_LOADTEST_UPSERT_BATCH items per Upsert stream (default 4)
    VSEARCH_LOADTEST_TOKEN        bearer token, when the gateway requires one (VSEARCH_AUTH_TOKEN)
    VSEARCH_LOADTEST_TIMEOUT_S    per-call deadline (default 10)
    VSEARCH_LOADTEST_WAIT_S       each user waits uniformly 0..WAIT_S between tasks (default 0: closed loop)
    VSEARCH_LOADTEST_CLEANUP      1 (default): delete the items this run upserted when the test stops

``--host`` is host:port; a scheme is stripped (``grpcs://`` or ``https://`` use TLS).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
import time
import uuid
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent.lock import Semaphore
from locust import User, between, events, task

# gRPC's own threads must yield to gevent's loop, or one blocking call stalls every simulated user.
grpc_gevent.init_gevent()

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # the generated stubs live at the repository root
    sys.path.insert(0, str(_ROOT))

from clients.loadtest import GHZ_CONFIG, fashion_mnist_pngs  # noqa: E402
from visualsearch.v1 import search_pb2 as pb  # noqa: E402
from visualsearch.v1 import search_pb2_grpc  # noqa: E402

MODEL = os.environ.get("VSEARCH_LOADTEST_MODEL", "")
IDS_PREFIX = os.environ.get("VSEARCH_LOADTEST_IDS_PREFIX", "fmnist-test-")
IDS_COUNT = int(os.environ.get("VSEARCH_LOADTEST_IDS_COUNT", "1000"))
TOP_K = int(os.environ.get("VSEARCH_LOADTEST_TOP_K", "10"))
UPSERT_BATCH = int(os.environ.get("VSEARCH_LOADTEST_UPSERT_BATCH", "4"))
TOKEN = os.environ.get("VSEARCH_LOADTEST_TOKEN", "")
TIMEOUT_S = float(os.environ.get("VSEARCH_LOADTEST_TIMEOUT_S", "10"))
WAIT_S = float(os.environ.get("VSEARCH_LOADTEST_WAIT_S", "0"))
CLEANUP = os.environ.get("VSEARCH_LOADTEST_CLEANUP", "1") != "0"
N_IMAGES = 256
UPSERT_PREFIX = "loadtest-"


class GrpcCallError(Exception):
    """A failed call as locust lists it: the status name and the gateway's message."""


def _query_images() -> list[bytes]:
    """Fashion-MNIST test PNGs, read once per process; without the data set, the image ghz.json carries."""
    try:
        return fashion_mnist_pngs(N_IMAGES)
    except (FileNotFoundError, ImportError):
        import base64
        import json

        return [base64.b64decode(json.loads(GHZ_CONFIG.read_text())["data"]["image"])]


IMAGES = _query_images()


def parse_host(host: str | None) -> tuple[str, bool]:
    """``grpc://h:p``, ``http://h:p/`` or ``h:p`` -> (``h:p``, use TLS)."""
    host = (host or "127.0.0.1:50051").strip()
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", host)
    if m is None:
        return host.rstrip("/"), False
    return host[m.end():].rstrip("/"), m.group(1).lower() in ("grpcs", "https")


def open_channel(host: str | None) -> grpc.Channel:
    target, tls = parse_host(host)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials()) if tls else grpc.insecure_channel(target)


class _Shared:
    """What every user of this process learns once: the model and which of the configured ids exist."""

    lock = Semaphore()
    model: str | None = None
    ids: list[str] | None = None
    upserted: dict[tuple[str, str], list[str]] = {}  # (host, model) -> ids, for the clean-up


class GatewayUser(User):
    """One simulated client with its own gRPC channel."""

    wait_time = between(0.0, WAIT_S)

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.channel: grpc.Channel | None = None
        self._stub: search_pb2_grpc.SearchServiceStub | None = None
        self.metadata = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else None
        self.model = ""
        self.ids: list[str] = []
        self.own_ids: list[str] = []
        self._counter = itertools.count()
        self._tag = uuid.uuid4().hex[:8]

    # ------------------------------------------------------------------------------------------ plumbing
    def call(self, name: str, method, request, check=None):
        """Calls ``method(request)`` and fires locust's request event; returns the reply, or None on failure."""
        start = time.perf_counter()
        reply, error = None, None
        try:
            reply = method(request, timeout=TIMEOUT_S, metadata=self.metadata)
            if check:
                check(reply)
        except grpc.RpcError as e:
            error = GrpcCallError(f"{e.code().name}: {e.details()}")
        except GrpcCallError as e:
            error = e
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=reply.ByteSize() if reply is not None else 0, exception=error, context={})
        return None if error else reply

    def on_start(self) -> None:
        self.channel = open_channel(self.host)
        self._stub = search_pb2_grpc.SearchServiceStub(self.channel)
        with _Shared.lock:
            if _Shared.model is None:
                _Shared.model = MODEL or self._default_model()
            if _Shared.ids is None and _Shared.model:
                _Shared.ids = self._existing_ids(_Shared.model)
        self.model = _Shared.model or ""
        self.ids = _Shared.ids or []

    @property
    def stub(self) -> search_pb2_grpc.SearchServiceStub:
        if self._stub is None:
            raise RuntimeError("on_start has not run: no channel yet")
        return self._stub

    def on_stop(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def _default_model(self) -> str:
        reply = self.call("ListModels", self.stub.ListModels, pb.ListModelsRequest())
        if reply is None or not reply.models:
            return ""
        with_items = [m.name for m in reply.models if m.count > 0]
        return (with_items or [reply.models[0].name])[0]

    def _existing_ids(self, model: str) -> list[str]:
        wanted = [f"{IDS_PREFIX}{i:05d}" for i in range(IDS_COUNT)]
        found: list[str] = []
        for start in range(0, len(wanted), 100):  # Get takes at most max_top_k ids (a server setting)
            reply = self.call("Get", self.stub.Get, pb.GetRequest(model=model, ids=wanted[start:start + 100]))
            found += [item.id for item in reply.items] if reply is not None else []
        return found

    # -------------------------------------------------------------------------------------------- tasks
    @task(6)
    def search_image(self) -> None:
        self.call("Search/image", self.stub.Search,
                  pb.SearchRequest(model=self.model, image=random.choice(IMAGES), top_k=TOP_K))

    @task(3)
    def search_id(self) -> None:
        ids = self.ids or self.own_ids
        if not ids:  # nothing indexed yet: make something to search for
            self.upsert()
            return
        self.call("Search/id", self.stub.Search, pb.SearchRequest(model=self.model, id=random.choice(ids), top_k=TOP_K))

    @task(1)
    def upsert(self) -> None:
        ids = [f"{UPSERT_PREFIX}{self._tag}-{next(self._counter)}" for _ in range(UPSERT_BATCH)]
        items = [pb.UpsertRequest(model=self.model, id=i, image=random.choice(IMAGES),
                                  metadata={"source": pb.Value(string_value="loadtest")}) for i in ids]

        def all_upserted(reply: pb.UpsertResponse) -> None:
            if reply.errors:
                e = reply.errors[0]
                raise GrpcCallError(f"{len(reply.errors)} item(s) failed, first {e.code}: {e.message}")

        # noted before the call: a user stopped mid-call may still have written them
        _Shared.upserted.setdefault((self.host or "", self.model), []).extend(ids)
        if self.call(f"Upsert/{UPSERT_BATCH}", self.stub.Upsert, iter(items), check=all_upserted) is not None:
            self.own_ids += ids


@events.test_stop.add_listener
def _delete_upserted(environment, **_kwargs) -> None:
    """Removes what this run wrote (every id tried, unknown ids are not an error), so runs can repeat. Run with
    ``--stop-timeout`` so that no upsert is still in flight (and lands after this) when the test stops."""
    if not CLEANUP:
        return
    metadata = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else None
    for (host, model), ids in list(_Shared.upserted.items()):
        with open_channel(host) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            for start in range(0, len(ids), 1000):
                try:
                    stub.Delete(pb.DeleteRequest(model=model, ids=ids[start:start + 1000]), timeout=TIMEOUT_S,
                                metadata=metadata)
                except grpc.RpcError as e:
                    print(f"loadtest clean-up of {model} on {host} failed: {e.code().name}", file=sys.stderr)
                    break
    _Shared.upserted.clear()

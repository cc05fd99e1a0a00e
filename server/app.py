"""The gateway process: a ``grpc.aio`` server with SearchService, health, reflection and metrics.

Health is SERVING only while both Triton and Milvus answer (checked every ``health_interval_s``), so a
load balancer stops sending traffic to a gateway whose backends are gone. SIGTERM turns health to
NOT_SERVING and drains in-flight calls for up to ``shutdown_grace_s`` before exiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from server.admission import return_freed_images_to_the_os
from server.embedder.triton import TritonEmbedder
from server.interceptors import GatewayInterceptor
from server.metrics import GatewayMetrics
from server.service import SearchService
from server.settings import Settings
from server.vector_store import open_store
from visualsearch.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger("vsearch.gateway")
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
MAX_MESSAGE_BYTES_SLACK = 1024 * 1024  # room for the rest of a message around the largest allowed image


def open_embedder(settings: Settings):
    """The runtime the settings name: Triton over gRPC, or ONNX Runtime in this process on the model repository."""
    if settings.runtime == "onnxruntime":
        from server.embedder.onnxruntime import OnnxRuntimeEmbedder

        return OnnxRuntimeEmbedder(settings.model_repository, settings.models, settings.onnxruntime_threads)
    return TritonEmbedder(settings.triton_url_list(), settings.triton_timeout_s, settings.triton_retries)


class Gateway:
    def __init__(self, settings: Settings, embedder=None, store=None) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.embedder = embedder or open_embedder(settings)
        self.store = store or open_store(settings.milvus_uri, settings)
        self.service = SearchService(settings, self.embedder, self.store, self.metrics)
        self.health = health.aio.HealthServicer()
        max_msg = settings.max_image_bytes * settings.max_batch_queries + MAX_MESSAGE_BYTES_SLACK
        self.server = grpc.aio.server(
            interceptors=[GatewayInterceptor(settings, self.metrics)],
            options=[("grpc.max_receive_message_length", max_msg), ("grpc.so_reuseport", 0)],
        )
        search_pb2_grpc.add_SearchServiceServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME, "grpc.health.v1.Health"],
                                            self.server)
        self._health_task: asyncio.Task | None = None
        self.port = 0

    async def start(self) -> int:
        s = self.settings
        address = f"{s.host}:{s.port}"
        if s.tls_cert and s.tls_key:
            creds = grpc.ssl_server_credentials([(s.tls_key.read_bytes(), s.tls_cert.read_bytes())])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        if s.metrics_port:
            start_http_server(s.metrics_port, addr=s.host, registry=self.metrics.registry)
        for name in ("", SERVICE_NAME):  # the servicer says SERVING by default: not before we have checked
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        await self.update_health()
        self._health_task = asyncio.create_task(self._watch_health())
        log.info("gateway listening on %s:%d (tls=%s)", s.host, self.port, bool(s.tls_cert))
        return self.port

    async def update_health(self) -> bool:
        triton_ok = await self.embedder.ready()
        try:
            milvus_ok = await asyncio.wait_for(asyncio.to_thread(self.store.ping),
                                               timeout=self.settings.milvus_ping_timeout_s)
        except TimeoutError:
            milvus_ok = False
        ok = triton_ok and milvus_ok
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        return ok

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            with contextlib.suppress(Exception):
                await self.update_health()

    async def stop(self, grace: float | None = None) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._health_task:
            self._health_task.cancel()
        await self.server.stop(self.settings.shutdown_grace_s if grace is None else grace)
        await self.service.live_recall.close()
        self.service.decoding.close()
        await self.embedder.close()
        await asyncio.to_thread(self.store.close)


async def serve(settings: Settings) -> None:
    return_freed_images_to_the_os()  # process-wide: once, before any decode
    gateway = Gateway(settings)
    await gateway.start()
    print(f"gateway ready on {settings.host}:{gateway.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining in-flight calls (up to %.0f s)", settings.shutdown_grace_s)
    await gateway.stop()


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level, format='{"t":"%(asctime)s","level":"%(levelname)s",'
                        '"logger":"%(name)s","msg":"%(message)s"}')
    # pymilvus logs every failed call at ERROR with a traceback; the store maps them to clear errors already.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    asyncio.run(serve(settings))

"""The whole stack on one machine: Triton (wheel binary), Milvus (``milvus`` wheel) and the gateway, on
loopback. Used by ``vsearch up``, the demo and the benchmarks; stops everything it started, in reverse."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.console import Console

from launchers.exporting import ensure_exported
from launchers.gateway import GatewayProcess
from launchers.milvus import MilvusServer
from launchers.triton import TritonServer
from server.settings import Settings

console = Console()


class Stack(contextlib.AbstractContextManager):
    def __init__(self, settings: Settings | None = None, milvus_uri: str | None = None,
                 gateway_port: int | None = None, gateway_env: dict[str, str] | None = None,
                 metrics_port: int | None = None) -> None:
        self.settings = settings or Settings()
        self.milvus_uri = milvus_uri
        self.gateway_port = gateway_port
        self.metrics_port = metrics_port  # None: a free port (tests run stacks side by side)
        self.gateway_env = gateway_env or {}
        self.triton: TritonServer | None = None
        self.milvus: MilvusServer | None = None
        self.gateway: GatewayProcess | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> Stack:
        s = self.settings
        try:
            ensure_exported(s)
            with console.status("starting Triton"):
                self.triton = self._stack.enter_context(TritonServer(s.model_repository, models=s.models))
            console.print(f"Triton ready on {self.triton.grpc_url}")
            uri = self.milvus_uri
            if uri is None:
                with console.status("starting Milvus"):
                    self.milvus = self._stack.enter_context(MilvusServer(Path(s.milvus_data_dir)))
                uri = self.milvus.uri
                console.print(f"Milvus ready on {uri} (data in {s.milvus_data_dir})")
            with console.status("starting the gateway"):
                # The gateway reads the models' calibrations beside them in the repository Triton serves.
                env = {"VSEARCH_MODEL_REPOSITORY": str(Path(s.model_repository).resolve()), **self.gateway_env}
                self.gateway = self._stack.enter_context(
                    GatewayProcess([self.triton.grpc_url], uri, port=self.gateway_port, env=env,
                                   metrics_port=self.metrics_port))
            console.print(f"gateway ready on [bold]{self.gateway.address}[/], metrics on "
                          f"http://{self.gateway.host}:{self.gateway.metrics_port}/metrics")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        """The gateway's host:port, once the stack has started."""
        if self.gateway is None:
            raise RuntimeError("the stack has not started")
        return self.gateway.address

    def running(self) -> bool:
        """The gateway process is still alive."""
        return self.gateway is not None and self.gateway.proc is not None and self.gateway.proc.poll() is None

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

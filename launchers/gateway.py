"""Runs the gateway as its own process (``python -m server``): for ``vsearch up``, the demo and the tests.

A separate process, not a task in the caller's event loop, so that it can be SIGKILLed and restarted like
the production one, and so its CPU time is its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launchers.ports import free_port


class GatewayStartupError(RuntimeError):
    pass


class GatewayProcess:
    def __init__(self, triton_urls: list[str], milvus_uri: str, port: int | None = None, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, log_path: Path | None = None,
                 startup_timeout_s: float = 60, metrics_port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.triton_urls = triton_urls
        self.milvus_uri = milvus_uri
        self.extra_env = env or {}
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vsearch-gateway-",
                                                                             suffix=".log")[1])
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.metrics_port = metrics_port or free_port()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VSEARCH_HOST": self.host, "VSEARCH_PORT": str(self.port),
                    "VSEARCH_TRITON_URLS": json.dumps(self.triton_urls), "VSEARCH_MILVUS_URI": self.milvus_uri,
                    "VSEARCH_METRICS_PORT": str(self.metrics_port)})
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> GatewayProcess:
        """Starts the process; with ``wait`` returns once health is SERVING (else once it answers at all)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "server"], env=self.environment(), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
        if wait:
            self.wait_serving()
        else:
            self.wait_answering()
        return self

    def wait_answering(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout_s)
        while self.health() is None:
            if self.proc and self.proc.poll() is not None:
                raise GatewayStartupError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise GatewayStartupError(f"gateway does not answer:\n{self.log_tail()}")
            time.sleep(0.2)

    def health(self, timeout: float = 1.0) -> int | None:
        """The health status (health_pb2.HealthCheckResponse.*), or None when the gateway doesn't answer."""
        cert = self.extra_env.get("VSEARCH_TLS_CERT")
        try:
            # A TLS gateway only answers over TLS: check its health with its own certificate as the root.
            channel = (grpc.secure_channel(self.address, grpc.ssl_channel_credentials(Path(cert).read_bytes()))
                       if cert else grpc.insecure_channel(self.address))
            with channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status
        except grpc.RpcError:
            return None

    def wait_serving(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout_s)
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise GatewayStartupError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
        raise GatewayStartupError(f"gateway not SERVING after {timeout or self.startup_timeout_s} s:\n"
                                  f"{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM: the gateway drains in-flight calls, then exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> GatewayProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

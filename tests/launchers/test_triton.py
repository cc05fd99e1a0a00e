"""The Triton launcher against the real tritonserver from the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from launchers.ports import free_port
from launchers.triton import SHM_DIR, TritonServer, TritonStartupError, find_tritonserver
from tests.fixtures.triton import start_triton


def _infer_add_one(url: str, x: np.ndarray, dtype: str = "FP32") -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        inp = grpcclient.InferInput("INPUT0", list(x.shape), dtype)
        inp.set_data_from_numpy(x)
        result = client.infer("add_one", [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], client_timeout=10)
        return result.as_numpy("OUTPUT0")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_find_tritonserver() -> None:
    assert os.access(find_tritonserver(), os.X_OK)


def test_server_and_model_ready(tiny_triton: TritonServer) -> None:
    with grpcclient.InferenceServerClient(tiny_triton.grpc_url) as client:
        assert client.is_server_ready()
        assert client.is_model_ready("add_one")
    assert tiny_triton.grpc_url == f"127.0.0.1:{tiny_triton.grpc_port}"
    assert len({tiny_triton.grpc_port, tiny_triton.http_port, tiny_triton.metrics_port}) == 3


def test_inference_adds_one(tiny_triton: TritonServer) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(_infer_add_one(tiny_triton.grpc_url, x), x + 1)


@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        (np.zeros((1, 4), dtype=np.int32), "INT32"),  # wrong dtype
        (np.zeros((1, 5), dtype=np.float32), "FP32"),  # wrong shape
        (np.zeros((17, 4), dtype=np.float32), "FP32"),  # batch above max_batch_size
    ],
)
def test_bad_request_fails_fast(tiny_triton: TritonServer, x: np.ndarray, dtype: str) -> None:
    started = time.monotonic()
    with pytest.raises(InferenceServerException):
        _infer_add_one(tiny_triton.grpc_url, x, dtype)
    assert time.monotonic() - started < 5


def test_stop_leaves_nothing_behind(tiny_triton_repo: Path) -> None:
    server = start_triton(tiny_triton_repo)
    pid, backend_dir, prefix = server.pid, server.backend_dir, server.shm_prefix
    assert pid is not None and backend_dir is not None and (backend_dir / "python").is_dir()
    assert list(SHM_DIR.glob(f"{prefix}*")), "expected the python backend's shm region under our prefix"

    server.stop()

    assert server.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert not _group_alive(pid), "a python backend stub outlived the server"
    assert not list(SHM_DIR.glob(f"{prefix}*"))
    assert not backend_dir.exists()
    server.stop()  # idempotent


def test_kill_then_restart(tiny_triton_repo: Path) -> None:
    with start_triton(tiny_triton_repo) as server:
        pid, prefix, grpc_url = server.pid, server.shm_prefix, server.grpc_url
        server.kill()
        assert not _group_alive(pid) and not list(SHM_DIR.glob(f"{prefix}*"))
        with pytest.raises(InferenceServerException):
            _infer_add_one(grpc_url, np.zeros((1, 4), dtype=np.float32))

        server.restart()
        assert server.pid != pid and server.grpc_url == grpc_url
        x = np.ones((1, 4), dtype=np.float32)
        np.testing.assert_array_equal(_infer_add_one(server.grpc_url, x), x + 1)


def test_restart_same_ports(tiny_triton_repo: Path) -> None:
    with start_triton(tiny_triton_repo) as server:
        urls, pid = (server.grpc_url, server.http_url), server.pid
        server.restart()
        assert (server.grpc_url, server.http_url) == urls and server.pid != pid
        x = np.full((3, 4), 2.5, dtype=np.float32)
        np.testing.assert_array_equal(_infer_add_one(server.grpc_url, x), x + 1)


def test_startup_failure_reports_log_tail(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\nmax_batch_size: 1\n')
    server = TritonServer(tmp_path, startup_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(TritonStartupError, match="unable to find backend library for backend 'onnxruntime'"):
        server.start()
    assert time.monotonic() - started < 30  # the process exit is noticed; no waiting for the timeout
    assert server.pid is None and server.backend_dir is None


def test_run_forever_stops_on_sigterm(tiny_triton_repo: Path) -> None:
    grpc_port, http_port, metrics_port = (free_port() for _ in range(3))
    code = (
        "import sys; from pathlib import Path; from launchers.triton import run_forever; "
        f"sys.exit(run_forever(Path({str(tiny_triton_repo)!r}), {grpc_port}, {http_port}, {metrics_port}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    try:
        line = proc.stdout.readline()  # printed once the server is ready
        assert f"grpc 127.0.0.1:{grpc_port}" in line
        np.testing.assert_array_equal(_infer_add_one(f"127.0.0.1:{grpc_port}", np.zeros((1, 4), np.float32)), 1)
        triton_pid = int(line.split()[2].rstrip(":"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not _group_alive(triton_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

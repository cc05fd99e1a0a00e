"""Run the real ``tritonserver`` binary that ships inside the PyPI wheel ``nvidia-pytriton`` (Triton 2.51).

We only borrow the wheel's files (binary, libraries, python backend); PyTriton's own Python host is not used: the raw
binary serves a standard model repository and is faster. Only the ``python`` backend is bundled, so CPU models are
python-backend ``model.py`` files (e.g. running onnxruntime).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

from launchers.ports import free_port
from server.settings import Settings

SHM_DIR = Path("/dev/shm")


class TritonNotInstalledError(RuntimeError):
    """The ``nvidia-pytriton`` wheel (which carries the binary) is not installed."""


class TritonStartupError(RuntimeError):
    """The server exited or did not become ready in time; the message ends with the tail of its log."""


# --------------------------------------------------------------------------------------------- locating the wheel


def _pytriton_dir() -> Path:
    # find_spec on a top-level package locates it without running its (heavy) __init__.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(
            "the tritonserver binary comes from the PyPI wheel nvidia-pytriton, which is not installed in "
            f"{sys.prefix}: pip install nvidia-pytriton==0.7.0"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def find_tritonserver() -> Path:
    """Path of the ``tritonserver`` binary inside the installed ``nvidia-pytriton`` wheel."""
    binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise TritonNotInstalledError(f"nvidia-pytriton is installed but {binary} is missing; reinstall the wheel")
    return binary


def _wheel_libs_dir() -> Path:
    # auditwheel puts the binary's shared libraries (libtritonserver, ...) next to the package.
    return _pytriton_dir().parent / "nvidia_pytriton.libs"


def assemble_backend_dir(dest: Path) -> Path:
    """Build ``dest/python/`` as Triton expects a backend folder: the backend library, its Python utilities and the
    stub for the running Python version (the wheel keeps one stub per version in a separate folder). Returns ``dest``,
    to pass as ``--backend-directory``."""
    root = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    for source in sources:
        if not source.is_file():
            raise TritonNotInstalledError(f"{source} is missing from nvidia-pytriton (no stub for Python {version}?)")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        link = python_dir / source.name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return dest


def triton_environment() -> dict[str, str]:
    """The environment tritonserver (and the python backend stubs it spawns) must run with."""
    env = dict(os.environ)
    # The stub links against libpython3.X.so. Without this Python's LIBDIR first, the loader picks the system's
    # (Debian's 3.11.2) libpython, which does not match the interpreter's stdlib: model load then fails with
    # "'_thread.RLock' object has no attribute '_recursion_count'". The wheel's own libraries go next.
    lib_dirs = [str(sysconfig.get_config_var("LIBDIR")), str(_wheel_libs_dir())]
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    # The stub finds its Python (and so the venv's site-packages) through PATH; PYTHONPATH alone is not enough.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _distinct_free_ports(wanted: list[int | None]) -> list[int]:
    """Fill the ``None`` entries with free ports that differ from each other and from the given ones."""
    ports: list[int] = []
    for port in wanted:
        while port is None or port in ports:
            port = free_port()
        ports.append(port)
    return ports


def _tail(path: Path | None, max_lines: int = 30) -> str:
    """The log's error lines, then its last lines: the cause (e.g. a model's load error in the status table) is often
    further up than the shutdown chatter at the end."""
    try:
        lines = path.read_text(errors="replace").splitlines() if path is not None else []
    except OSError as exc:
        return f"(no log: {exc})"
    errors = [line for line in lines if line.startswith("E") or "UNAVAILABLE" in line or "error" in line.lower()]
    tail = lines[-max_lines:]
    head = [line for line in errors[-max_lines:] if line not in tail]
    return "\n".join([*head, "...", *tail] if head else tail)


# --------------------------------------------------------------------------------------------------- the server


class TritonServer:
    """One ``tritonserver`` process serving ``model_repository``; a context manager that always stops it.

    ``None`` ports are picked free once, in ``__init__``, so ``restart()`` comes back on the same ports.
    ``models`` limits the server to those models (explicit model-control mode); by default it loads and waits for
    every model folder in the repository.
    """

    def __init__(
        self,
        model_repository: Path,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        startup_timeout_s: float = 180,
        models: list[str] | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.grpc_port, self.http_port, self.metrics_port = _distinct_free_ports([grpc_port, http_port, metrics_port])
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.models = list(models) if models is not None else None
        self._requested_log_path = Path(log_path).resolve() if log_path is not None else None
        self._log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._shm_prefix = ""

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        # Nominal: the server runs with --allow-metrics false, so nothing listens here (the port is still reserved).
        return f"{self.host}:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def backend_dir(self) -> Path | None:
        """The temporary backend folder of the running server (removed by ``stop()``)."""
        return self._run_dir / "backends" if self._run_dir is not None else None

    @property
    def shm_prefix(self) -> str:
        """Name prefix of this server's python-backend shared-memory regions in /dev/shm."""
        return self._shm_prefix

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def model_names(self) -> list[str]:
        if self.models is not None:
            return self.models
        return sorted(p.name for p in self.model_repository.iterdir() if (p / "config.pbtxt").is_file())

    # --------------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> TritonServer:
        if self._proc is not None:
            raise RuntimeError("already started; stop() first")
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
        binary = find_tritonserver()
        self._run_dir = Path(tempfile.mkdtemp(prefix="vsearch-triton-"))
        backend_dir = assemble_backend_dir(self._run_dir / "backends")
        self._log_path = self._requested_log_path or self._run_dir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        # A prefix of our own for the python backend's /dev/shm regions: stop() can then remove exactly this server's
        # leftovers (a SIGKILLed server leaves them behind) without touching other servers' regions.
        self._shm_prefix = f"triton_python_backend_shm_region_vsearch_{uuid.uuid4().hex[:12]}_"
        cmd = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false",
            # Seconds the server waits for in-flight requests on SIGTERM before it exits anyway.
            "--exit-timeout-secs=2",
        ]
        if self.models is not None:
            cmd += ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models)]
        with open(self._log_path, "ab") as log:  # append: a restart keeps the earlier runs' log
            # A session of its own, so stop()/kill() can reach the python-backend stubs through the process group.
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=triton_environment(),
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient  # heavy import (grpc), only needed here
        from tritonclient.utils import InferenceServerException

        assert self._proc is not None and self._log_path is not None
        deadline = time.monotonic() + self.startup_timeout_s
        pending = self.model_names()
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                if self._proc.poll() is not None:
                    raise TritonStartupError(
                        f"tritonserver exited with code {self._proc.returncode} before it was ready"
                        f"{self._log_hint()}:\n{_tail(self._log_path)}"
                    )
                try:
                    if client.is_server_ready(client_timeout=2):
                        pending = [name for name in pending if not client.is_model_ready(name, client_timeout=2)]
                        if not pending:
                            return
                except InferenceServerException:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise TritonStartupError(
                        f"tritonserver not ready after {self.startup_timeout_s:.0f} s, models not ready: {pending}"
                        f"{self._log_hint()}:\n{_tail(self._log_path)}"
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def _log_hint(self) -> str:
        # The default log lives in the temp folder that stop() removes: only point at a log that will still exist.
        return f" (log {self._requested_log_path})" if self._requested_log_path else ""

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM, wait up to ``timeout_s`` (the binary needs about 4 s), then SIGKILL; always cleans up."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        self._reap_and_clean()

    def kill(self) -> None:
        """Crash the server (SIGKILL, no graceful shutdown) and clean up after it; for fault tests."""
        self._reap_and_clean()

    def restart(self) -> TritonServer:
        self.stop()
        return self.start()

    def _reap_and_clean(self) -> None:
        proc = self._proc
        if proc is not None:
            # SIGKILL what is left of the group: the server if it did not stop, and any orphaned stubs.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self._wait_group_gone(proc.pid)
        self._proc = None
        if self._shm_prefix:
            for segment in SHM_DIR.glob(f"{self._shm_prefix}*"):
                segment.unlink(missing_ok=True)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    @staticmethod
    def _wait_group_gone(pgid: int, timeout_s: float = 5) -> None:
        # Stubs are children of the server; once it is reaped they are re-parented and die from SIGKILL shortly after.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def __enter__(self) -> TritonServer:
        # Already started (e.g. by a factory that returns a started server) is fine: the block still stops it.
        return self if self._proc is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TritonServer(grpc={self.grpc_url}, http={self.http_url}, pid={self.pid}, repo={self.model_repository})"


# ------------------------------------------------------------------------------------------------------------ CLI


def run_forever(
    model_repository: Path | None = None,
    grpc_port: int | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
    host: str | None = None,
    models: list[str] | None = None,
    log_path: Path | None = None,
    settings: Settings | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (for ``vsearch triton``); unset arguments come from ``Settings``.

    Returns the exit code: 0 after a signal, 1 if the server died on its own."""
    settings = settings or Settings()
    server = TritonServer(
        model_repository or settings.model_repository,
        grpc_port=grpc_port if grpc_port is not None else settings.triton_grpc_port,
        http_port=http_port if http_port is not None else settings.triton_http_port,
        metrics_port=metrics_port if metrics_port is not None else settings.triton_metrics_port,
        host=host or settings.triton_host,
        log_path=log_path,
        models=models,
    )
    stop_requested = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(
            f"tritonserver pid {server.pid}: grpc {server.grpc_url}  http {server.http_url}  log {server.log_path}",
            flush=True,
        )
        while not stop_requested.wait(1.0):
            if not server.is_running():
                print(f"tritonserver exited on its own; log tail:\n{_tail(server.log_path)}", file=sys.stderr)
                return 1
        print("stopping tritonserver", flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

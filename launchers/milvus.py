"""Runs the real Milvus 2.3.5 standalone binary carried by the PyPI package ``milvus`` ("Embedded Milvus").

The package ships the binary and its libraries as ``.lzma`` files plus a config template. We extract them
once into a shared cache folder, render the template ourselves and run ``milvus run standalone`` with:

- every port on a free loopback port: the proxy (the client port), its internal port, each coordinator and
  node, the metrics/health web port, and the embedded etcd's client and peer ports (etcd ignores the
  template's ``etcd.endpoints`` and would otherwise always listen on 2379/2380, so a second instance fails);
- every component's advertised address pinned to the host (by default they advertise the machine's network
  address and calls then fail: "failed to connect ...:53100");
- a per-instance ``-alias`` so its pid file (``/run/milvus/standalone-<alias>.pid``, or under
  ``/tmp/milvus`` when ``/run`` is not writable) differs from any other instance's; we remove it after a stop.

So several instances (two test sessions, a test session and the demo) run side by side. Note: Milvus 2.3's
gRPC and web servers bind all interfaces (``*:port``); the ``ip`` settings only choose the advertised address.
Etcd binds the loopback address.

Stopping: SIGTERM once it is fully started (a SIGTERM mid-start left it half-stopped), wait for the exit,
SIGKILL after ``stop_timeout_s``. Milvus 2.3.5's own shutdown is fragile: it often ends in a "panic: context
canceled" (harmless), and sometimes its root coordinator's stop blocks for 15 s or more, hence the fall-back.
Acknowledged writes are in its write-ahead log (rocksmq), so a SIGKILL loses none (tested).

Measured on 2 busy cores: first start on an empty folder 2-3 s (plus 4 s, once per machine, to extract the
binary); a restart on existing data 5-10 s, then collections reload for a few more seconds (searches meanwhile
fail as not loaded, or time out); a SIGTERM stop 3 s typically, up to the SIGKILL fall-back at times.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

from launchers.ports import free_port

log = logging.getLogger(__name__)

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# Template placeholders that are ports (the package's names), plus the ports the template does not expose.
_TEMPLATE_PORTS = ("proxy_port", "proxy_internal_port", "root_coord_port", "query_coord_port", "query_node_port",
                   "index_coord_port", "index_node_port", "data_coord_port", "data_node_port", "etcd_port")
_EXTRA_PORTS = ("etcd_peer_port", "metrics_port")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*(?:\(\w+\))?\s*(?::\s*([^}]*?))?\s*\}\}")
_RUN_DIRS = (Path("/run/milvus"), Path("/tmp/milvus"))
GRACEFUL_STOP_S = 3  # per-node graceful stop (query node, index node), seconds
FORCE_STOP_S = 15  # Milvus forces its own exit after this, seconds
# Each component's etcd session lease (Milvus default 30 s). Milvus 2.3.5 panics while shutting down, so even a
# clean stop leaves some node sessions behind (after a SIGKILL, all): until they expire, the data coordinator keeps
# the insert channels on the dead data node and searches on a reloaded collection time out ("delegator search
# failed to wait tsafe"). Measured: 12-15 s of that after a restart with 15 s; 0-3 s with 10 s (they expire while
# the new process starts). Shorter would risk a live session expiring on a starved machine.
SESSION_TTL_S = 10


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # Milvus binds the wildcard address for most ports: check that too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def package_dir() -> Path:
    """The installed ``milvus`` package's data folder (binary as .lzma files, config template)."""
    import milvus  # the PyPI package "milvus" (Embedded Milvus), not pymilvus

    return Path(milvus.__file__).resolve().parent / "data"


def milvus_version() -> str:
    import milvus

    return str(milvus.__version__)


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "visual-search" / f"milvus-{milvus_version()}"


def ensure_binary(cache_dir: Path | None = None) -> Path:
    """Extract the packaged binary and libraries once (about 250 MB, 4 s) into ``cache_dir/bin``; safe when
    several processes call it at once (file lock; files are replaced atomically, so a running binary is never
    rewritten in place). Returns the folder holding ``milvus``."""
    cache_dir = Path(cache_dir or default_cache_dir())
    bin_dir = cache_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    src_dir = package_dir() / "bin"
    sources = sorted(src_dir.glob("*.lzma"))
    if not sources:
        raise RuntimeError(f"no Milvus binary in the installed package ({src_dir})")
    stamp = hashlib.sha256(
        "\n".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources).encode()).hexdigest()
    marker = bin_dir / ".extracted"
    if marker.exists() and marker.read_text() == stamp and (bin_dir / "milvus").exists():
        return bin_dir
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == stamp and (bin_dir / "milvus").exists():
            return bin_dir
        for src in sources:
            target = bin_dir / src.name[: -len(".lzma")]
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            with lzma.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        marker.write_text(stamp)
    return bin_dir


def _set_nested(text: str, settings: dict[str, str]) -> str:
    """Set ``a.b.c: value`` in the YAML text (two-space indentation, as in the template): keys that exist are
    replaced in place; missing ones are added under their deepest existing parent (which must exist)."""
    out: list[str] = []
    path: list[str] = []
    line_of: dict[str, int] = {}  # key -> index in out of the line that opens or sets it
    for line in text.splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_]+):([^#]*)(#.*)?$", line.rstrip())
        if line.strip().startswith("#") or not m:
            out.append(line)
            continue
        level = len(m.group(1)) // 2
        path = path[:level] + [m.group(2)]
        key = ".".join(path)
        if key in settings:
            line = f"{m.group(1)}{m.group(2)}: {settings[key]}"
        line_of.setdefault(key, len(out))
        out.append(line)
    inserts: list[tuple[int, list[str]]] = []
    for key, value in settings.items():
        if key in line_of:
            continue
        parts = key.split(".")
        depth = max((i for i in range(1, len(parts)) if ".".join(parts[:i]) in line_of), default=0)
        if depth == 0:
            raise ValueError(f"Milvus config: no section for {key}")
        lines = [f"{'  ' * i}{parts[i]}:" for i in range(depth, len(parts) - 1)]
        lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
        inserts.append((line_of[".".join(parts[:depth])], lines))
    for index, lines in sorted(inserts, key=lambda t: t[0], reverse=True):
        out[index + 1:index + 1] = lines
    return "\n".join(out) + "\n"


def render_config(values: dict[str, object], nested: dict[str, str]) -> str:
    """The package's template with its ``{{ name(type): default }}`` placeholders filled from ``values`` (or
    their defaults) and the dotted keys of ``nested`` set (added where the template lacks them)."""
    text = (package_dir() / "config.yaml.template").read_text()

    def fill(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in values:
            val = values[name]
            return ("true" if val else "false") if isinstance(val, bool) else str(val)
        if default is None:
            raise RuntimeError(f"Milvus config template: no value for {name}")
        return default.strip()

    return _set_nested(_PLACEHOLDER.sub(fill, text), nested)


class MilvusServer:
    """One Milvus 2.3.5 standalone process on loopback ports; a context manager.

    ``port`` None picks a free port; the internal ports are always free ones, chosen once and kept across
    ``restart()`` (the same ``uri``). ``data_dir`` holds ``configs/``, ``logs/`` and ``data/`` (etcd, rocksmq,
    segments): a restart on the same folder keeps the collections."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 startup_timeout_s: float = 120, log_path: Path | None = None, *,
                 stop_timeout_s: float = 15, cache_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.advertise_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = Path(log_path) if log_path else self.data_dir / "logs" / "milvus-stdout.log"
        self.cache_dir = cache_dir
        self._requested_port = port
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None
        self._log_fp: IO[str] | None = None
        self._ready = False
        self._lock = threading.RLock()
        self.alias = ""
        self.last_start_s: float | None = None
        self.last_stop_s: float | None = None

    # -- properties -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if "proxy_port" not in self.ports:
            self._choose_ports()
        return self.ports["proxy_port"]

    @property
    def uri(self) -> str:
        return f"http://{self.advertise_host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ready(self) -> bool:
        return self._ready and self.running

    @property
    def pid_file(self) -> Path | None:
        for d in _RUN_DIRS:
            p = d / f"standalone-{self.alias}.pid"
            if p.exists():
                return p
        return None

    # -- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> MilvusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _choose_ports(self) -> None:
        """Keep the ports of the last start on this data folder where they are still free (Milvus registers
        each component's address in etcd: after a crash, a restart on other ports waits about a minute for the
        old sessions to expire; on the same ports it is ready in seconds). Otherwise free ports."""
        previous = dict(self.ports)
        if not previous:
            with contextlib.suppress(OSError, ValueError, TypeError):
                previous = {k: int(v) for k, v in json.loads(self._ports_file.read_text()).items()}
        taken: set[int] = set()
        proxy = self._requested_port or self.ports.get("proxy_port")
        if not proxy:
            old = previous.get("proxy_port")
            proxy = old if old and _port_is_free(old, self.advertise_host) else free_port(self.advertise_host)
        taken.add(proxy)
        ports = {"proxy_port": proxy}
        for name in (*_TEMPLATE_PORTS, *_EXTRA_PORTS):
            if name == "proxy_port":
                continue
            old = previous.get(name)
            if old and old not in taken and _port_is_free(old, self.advertise_host):
                ports[name] = old
            else:
                ports[name] = free_port(self.advertise_host, exclude=taken)
            taken.add(ports[name])
        self.ports = ports
        self.alias = f"vsearch{proxy}"

    @property
    def _ports_file(self) -> Path:
        return self.data_dir / "configs" / "ports.json"

    def _write_config(self) -> Path:
        conf_dir = self.data_dir / "configs"
        logs_dir = self.data_dir / "logs"
        storage = self.data_dir / "data"
        for d in (conf_dir, logs_dir, storage):
            d.mkdir(parents=True, exist_ok=True)
        p = self.ports
        h = self.advertise_host
        etcd_conf = conf_dir / "etcd.yaml"
        etcd_conf.write_text(
            "name: default\n"
            f"listen-client-urls: http://{h}:{p['etcd_port']}\n"
            f"advertise-client-urls: http://{h}:{p['etcd_port']}\n"
            f"listen-peer-urls: http://{h}:{p['etcd_peer_port']}\n"
            f"initial-advertise-peer-urls: http://{h}:{p['etcd_peer_port']}\n"
            f"initial-cluster: default=http://{h}:{p['etcd_peer_port']}\n")
        values: dict[str, object] = {name: p[name] for name in _TEMPLATE_PORTS}
        values.update(
            etcd_log_path=str(logs_dir / "etcd.log"), etcd_data_dir=str(storage / "etcd.data"),
            local_storage_dir=str(storage), rocksmq_data_dir=str(storage / "rocksmq"), system_log_path=str(logs_dir))
        nested = {f"{c}.ip": h for c in COMPONENTS}
        nested.update({
            "etcd.endpoints": f"{h}:{p['etcd_port']}",
            "etcd.config.path": str(etcd_conf),  # the embedded etcd's own config: its listen addresses
            "indexCoord.address": f"{h}:{p['index_coord_port']}",
            # A query node's graceful stop waits (30 s by default) to hand its segments to another node, and
            # a standalone has none: without these a SIGTERM with a loaded collection takes 30 s or more.
            "queryNode.gracefulStopTimeout": str(GRACEFUL_STOP_S),
            "indexNode.gracefulStopTimeout": str(GRACEFUL_STOP_S),
            "common.gracefulStopTimeout": str(FORCE_STOP_S),
            "common.session.ttl": str(SESSION_TTL_S),
        })
        (conf_dir / "milvus.yaml").write_text(render_config(values, nested))
        self._ports_file.write_text(json.dumps(p, indent=1))
        shutil.copy(package_dir() / "glog.conf", conf_dir / "glog.conf")
        return conf_dir

    def start(self) -> MilvusServer:
        """Start and wait until ``MilvusClient(uri).list_collections()`` answers (TimeoutError after
        ``startup_timeout_s``; RuntimeError with the log's tail when the process exits first)."""
        with self._lock:
            if self.running:
                return self
            t0 = time.monotonic()
            bin_dir = ensure_binary(self.cache_dir)
            self._choose_ports()
            conf_dir = self._write_config()
            self._remove_pid_file()
            env = os.environ.copy()
            env.update(DEPLOY_MODE="STANDALONE", METRICS_PORT=str(self.ports["metrics_port"]),
                       MILVUSCONF=str(conf_dir),
                       LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(bin_dir), env.get("LD_LIBRARY_PATH")])))
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_fp = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop)
            self._ready = False
            log.info("starting Milvus on %s (data %s, log %s)", self.uri, self.data_dir, self.log_path)
            self._proc = subprocess.Popen(
                [str(bin_dir / "milvus"), "run", "standalone", "-alias", self.alias],
                cwd=self.data_dir, env=env, stdin=subprocess.DEVNULL, stdout=self._log_fp,
                stderr=subprocess.STDOUT, start_new_session=True)
            _RUNNING.add(self)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.kill()  # half-started: SIGTERM now could leave it half-stopped
            raise
        self.last_start_s = time.monotonic() - t0
        log.info("Milvus ready on %s in %.1f s (pid %d)", self.uri, self.last_start_s, self._proc.pid)
        return self

    def _wait_ready(self, t0: float) -> None:
        # Cheap probes first (the proxy's port accepts, then /healthz says OK), so that pymilvus, which logs
        # every failed call with a traceback, is only asked once the server should answer.
        from pymilvus import MilvusClient

        deadline = t0 + self.startup_timeout_s
        health_url = f"http://{self.advertise_host}:{self.ports['metrics_port']}/healthz"
        last_err: object = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"Milvus exited during start-up (exit code {code}); log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection((self.advertise_host, self.port), timeout=1):
                    pass
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    body = resp.read().decode("utf-8", "replace")
                if "OK" not in body:
                    raise RuntimeError(f"healthz: {body[:200]}")
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                last_err = exc
                time.sleep(0.25)
                continue
            client = None
            try:
                client = MilvusClient(uri=self.uri, timeout=5, dedicated=True)
                client.list_collections(timeout=5)
                self._ready = True
                return
            except Exception as exc:  # any failure means "not ready yet"
                last_err = exc
                time.sleep(0.5)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
        raise TimeoutError(f"Milvus not ready on {self.uri} after {self.startup_timeout_s} s "
                           f"(last error: {last_err}); log {self.log_path}")

    def stop(self) -> None:
        """A deliberate stop: SIGTERM (only once fully started), wait up to ``stop_timeout_s``, then SIGKILL.
        Returns after the process is gone; removes its pid file."""
        with self._lock:
            proc = self._proc
            if proc is None:
                self._close_log()
                return
            t0 = time.monotonic()
            if proc.poll() is None:
                if not self._ready:
                    # Half-started: SIGTERM now can leave it half-stopped. Kill it outright.
                    self._kill_and_reap()
                else:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=self.stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        log.warning("Milvus (pid %d) did not exit %s s after SIGTERM: SIGKILL", proc.pid,
                                    self.stop_timeout_s)
                        self._kill_and_reap()
            self.last_stop_s = time.monotonic() - t0
            self._proc = None
            _RUNNING.discard(self)
            self._ready = False
            self._remove_pid_file()
            self._close_log()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no clean shutdown; a later ``start()`` recovers from the data folder."""
        with self._lock:
            if self._proc is None:
                return
            self._kill_and_reap()
            self._proc = None
            _RUNNING.discard(self)
            self._ready = False
            self._remove_pid_file()
            self._close_log()

    def restart(self) -> MilvusServer:
        """Stop (deliberately) and start again on the same data folder and client port."""
        self.stop()
        return self.start()

    def run_forever(self, on_ready=None) -> int:
        """For ``vsearch milvus``: start, call ``on_ready(self)`` (default: print the URI), block until
        SIGINT/SIGTERM or until Milvus exits, then stop. Returns an exit code."""
        stop_event = threading.Event()
        previous = {}

        def handler(signum, frame):
            stop_event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            self.start()
            if on_ready is None:
                print(f"Milvus {milvus_version()} ready at {self.uri} (data {self.data_dir}, log {self.log_path}); "
                      "Ctrl+C to stop", flush=True)
            else:
                on_ready(self)
            while not stop_event.wait(0.5):
                if not self.running:
                    code = self._proc.returncode if self._proc is not None else None
                    log.error("Milvus exited unexpectedly (exit code %s); log %s", code, self.log_path)
                    return 1
            return 0
        finally:
            self.stop()
            for sig, h in previous.items():
                signal.signal(sig, h)

    # -- helpers ----------------------------------------------------------------------------------------
    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _kill_and_reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:  # not reaped yet, so its pid (= its process group) cannot have been reused
            self._kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        # start_new_session=True made the Milvus pid its own process-group id: only its own processes.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _remove_pid_file(self) -> None:
        if not self.alias:
            return
        for d in _RUN_DIRS:
            with contextlib.suppress(OSError):
                (d / f"standalone-{self.alias}.pid").unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log_fp is not None:
            with contextlib.suppress(OSError):
                self._log_fp.close()
            self._log_fp = None

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("running" if self.running else "stopped")
        return f"MilvusServer({self.uri}, {state}, data_dir={str(self.data_dir)!r})"


_RUNNING: set[MilvusServer] = set()  # strong references: a running server is never garbage-collected unstopped


@atexit.register
def _stop_all() -> None:
    """Never leave a Milvus process behind when the interpreter exits normally."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()

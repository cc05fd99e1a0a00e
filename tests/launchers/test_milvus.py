"""MilvusServer: the real Milvus 2.3.5 standalone from the ``milvus`` wheel, on free loopback ports."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from launchers.milvus import COMPONENTS, MilvusServer, _set_nested, render_config
from launchers.ports import free_port
from server.settings import Settings
from server.vector_store.milvus import MilvusVectorStore
from tests.fixtures.milvus import unique_model, wait_serving


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 < port < 65536
    assert _bindable(port)
    assert free_port(exclude={port}) != port


def test_config_sets_and_adds_nested_keys():
    text = "etcd:\n  endpoints: a\n  use:\n    embed: true\nproxy:\n  ip: # comment\n  port: 1\n"
    out = _set_nested(text, {"etcd.endpoints": "b", "proxy.ip": "127.0.0.1", "etcd.config.path": "/x.yaml",
                             "proxy.grpc.max": "5"})
    assert "  endpoints: b\n" in out
    assert "  ip: 127.0.0.1\n" in out
    assert "etcd:\n  config:\n    path: /x.yaml\n" in out
    assert "proxy:\n  grpc:\n    max: 5\n" in out
    with pytest.raises(ValueError, match="no section"):
        _set_nested(text, {"nothere.x": "1"})


def test_rendered_config_pins_addresses_and_ports(tmp_path):
    values = {"proxy_port": 12345, "etcd_data_dir": str(tmp_path / "etcd"), "local_storage_dir": str(tmp_path),
              "rocksmq_data_dir": str(tmp_path / "mq"), "system_log_path": str(tmp_path)}
    nested = {f"{c}.ip": "127.0.0.1" for c in COMPONENTS}
    with pytest.raises(RuntimeError, match="no value for"):
        render_config({"proxy_port": 1}, nested)
    text = render_config(values, nested)
    assert "{{" not in text
    assert re.search(r"^  port: 12345$", text, re.M)
    assert len(re.findall(r"^  ip: 127\.0\.0\.1$", text, re.M)) == len(COMPONENTS)


def test_session_server_is_ready(milvus_server: MilvusServer):
    assert milvus_server.ready
    assert milvus_server.uri == f"http://127.0.0.1:{milvus_server.port}"
    assert milvus_server.last_start_s is not None and milvus_server.last_start_s < 120
    client = MilvusClient(uri=milvus_server.uri, dedicated=True)
    try:
        assert isinstance(client.list_collections(), list)
    finally:
        client.close()
    # Its own pid file (per-instance alias), so a second instance is not refused.
    assert milvus_server.pid_file is not None
    assert milvus_server.pid_file.read_text().strip() == str(milvus_server.pid)
    # No default ports: nothing collides with another Milvus on this machine.
    assert not {19530, 2379, 2380, 9091, 53100} & set(milvus_server.ports.values())
    assert len(set(milvus_server.ports.values())) == len(milvus_server.ports)


@pytest.mark.slow
def test_second_instance_kill_restart_stop(milvus_server: MilvusServer, tmp_path):
    """A second instance beside the session's one: data written, SIGKILLed, started again (data still there),
    then stopped deliberately: no process, no pid file, port free."""
    model = unique_model()
    with MilvusServer(tmp_path / "milvus2", startup_timeout_s=180) as other:
        assert other.ready and milvus_server.ready
        assert other.port != milvus_server.port
        assert not set(other.ports.values()) & set(milvus_server.ports.values())
        store = MilvusVectorStore(other.uri, Settings())
        try:
            vectors = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
            store.upsert(model, [f"v{i}" for i in range(20)], vectors, [{"i": i} for i in range(20)])
            assert store.count(model) == 20

            pid = other.pid
            other.kill()
            assert not _alive(pid)
            assert not other.running
            assert not store.ping()

            other.start()
            assert other.ready and other.pid != pid
            assert wait_serving(lambda: store.count(model)) == 20
            hits = wait_serving(lambda: store.search(model, vectors[3:4], 1))
            assert hits[0][0].id == "v3"

            pid, port, pid_file = other.pid, other.port, other.pid_file
            assert pid_file is not None
            t0 = time.monotonic()
            other.stop()
            assert time.monotonic() - t0 < other.stop_timeout_s + 35
            assert not _alive(pid)
            assert not other.running
            assert not pid_file.exists()
            assert _bindable(port)
            other.stop()  # idempotent
        finally:
            store.close()
    assert milvus_server.ready  # the session's instance was not disturbed

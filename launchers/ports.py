"""Free loopback ports for the processes the launchers start (Triton, Milvus, the gateway)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", exclude: set[int] | None = None) -> int:
    """A TCP port that nothing listens on now (the kernel's choice), not in ``exclude``. Another process may
    still take it before the caller binds it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise RuntimeError("no free port found")

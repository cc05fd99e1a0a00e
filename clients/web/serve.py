"""Runs the page's app (``clients.web.app``) with uvicorn in a background thread: ``vsearch up`` and the browser
tests start it beside the stack and stop it with it."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from clients.web.app import create_app


class WebServer(contextlib.AbstractContextManager):
    def __init__(self, gateway: str, host: str = "127.0.0.1", port: int = 8080) -> None:
        config = uvicorn.Config(create_app(gateway), host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}/"
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    def start(self, timeout_s: float = 20.0) -> WebServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web page did not start on {self.url} (port in use?)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

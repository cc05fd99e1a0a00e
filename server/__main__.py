"""``python -m server``: run the gateway with settings from VSEARCH_* environment variables."""

from server.app import run

run()

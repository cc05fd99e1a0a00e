"""Clients of the visual-search gateway: the Python SDK and the ``vsearch`` command line."""

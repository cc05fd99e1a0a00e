"""The web page: a small FastAPI app over the SDK (``clients.sdk``), talking to the gateway's public gRPC API."""

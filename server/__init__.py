"""The visual-search gateway and the processes it talks to (Triton, Milvus)."""

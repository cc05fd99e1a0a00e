"""Extractor -> ONNX (with a parity check) -> Triton model repository (cpu or gpu target)."""

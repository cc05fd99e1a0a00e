"""Names of the served graph's tensors: the contract between export (which names them in ONNX and config.pbtxt)
and the gateway's Triton embedder (which sends and asks for them)."""

INPUT_NAME = "pixels"  # uint8 [B, 3, S, S]
EMBEDDING_OUTPUT = "embedding"  # float32 [B, D], unit norm
ATTENTION_OUTPUT = "attention"  # float32 [B, heads, N]: the last block's CLS self-attention (ViTs)

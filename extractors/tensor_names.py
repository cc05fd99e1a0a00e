"""Names of the served graph's tensors: the contract between export (which names them in ONNX and config.pbtxt)
and the gateway's Triton embedder (which sends and asks for them)."""

INPUT_NAME = "pixels"  # uint8 [B, 3, S, S]
EMBEDDING_OUTPUT = "embedding"  # float32 [B, D], unit norm
ATTENTION_OUTPUT = "attention"  # float32 [B, heads, N]: the last block's CLS self-attention (ViTs)
# float32 [B, regions, D]: each region's additive share of the embedding (extractors.contributions), so that
# ``contributions @ v`` splits the cosine score with ``v`` over the regions (4x4 ViT patches, 7x7 CNN cells)
PATCH_CONTRIBUTIONS_OUTPUT = "patch_contributions"

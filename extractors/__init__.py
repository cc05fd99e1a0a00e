"""Feature extractors: our ViT (DINO-checkpoint compatible), DINO and supervised training, EfficientNet-Lite0."""

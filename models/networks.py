"""The networks: a small MONAI DenseNet trunk with a class-activation head.

The head is a 1x1 convolution giving one logit map per finding; a log-sum-exp pooling turns each
map into the image's logit. The maps are the localization heatmaps (class activation maps, the
model's own evidence; no second pass as Grad-CAM or occlusion would need), exported with the
logits in the same ONNX graph. Inputs: CT (N, 20, 128, 128) per slice (five channels at 256 x 256,
folded by ``space_to_depth``), CXR (N, 1, 192, 192).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

log = logging.getLogger(__name__)

ARCHS = {
    # name: (in_channels, findings, init_features, growth_rate, block_config, input size)
    "ich": dict(in_channels=20, n_out=1, init_features=16, growth_rate=8, block_config=(4, 6), stem="monai"),
    "cxr": dict(in_channels=1, n_out=3, init_features=16, growth_rate=8, block_config=(4, 6, 6)),
}


class CAMNet(nn.Module):
    """MONAI DenseNet features -> ReLU -> 1x1 conv (logit maps) -> LSE pooling (logits)."""

    def __init__(self, in_channels: int, n_out: int, init_features: int = 16, growth_rate: int = 8,
                 block_config: tuple[int, ...] = (4, 6), pool_r: float = 5.0, stem: str = "monai") -> None:
        super().__init__()
        from monai.networks.nets import DenseNet

        trunk = DenseNet(spatial_dims=2, in_channels=in_channels, out_channels=n_out, init_features=init_features,
                         growth_rate=growth_rate, block_config=block_config, bn_size=4)
        self.features = trunk.features
        if stem == "fine":   # 3x3 stride-2 conv, no max-pool: maps at 1/4 of the input, not 1/8
            self.features.conv0 = nn.Conv2d(in_channels, init_features, 3, stride=2, padding=1, bias=False)
            self.features.pool0 = nn.Identity()
        elif stem != "monai":
            raise ValueError(f"unknown stem {stem!r}: use monai or fine")
        with torch.no_grad():
            channels = self.features(torch.zeros(1, in_channels, 64, 64)).shape[1]
        self.head = nn.Conv2d(channels, n_out, kernel_size=1)
        self.pool_r = pool_r

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.head(torch.relu(self.features(x)))
        flat = maps.flatten(2) * self.pool_r
        n = flat.shape[-1]
        logits = (torch.logsumexp(flat, dim=-1) - math.log(n)) / self.pool_r
        return logits, maps


ARCH_KEYS = ("in_channels", "n_out", "init_features", "growth_rate", "block_config", "stem")


def build(task: str, arch: dict | None = None) -> CAMNet:
    """The network for ``task``: the shipped architecture, or ``arch`` (a model card's
    ``architecture``) where given."""
    params = dict(ARCHS[task])
    if arch:
        params.update({k: tuple(v) if isinstance(v, list) else v for k, v in arch.items() if k in ARCH_KEYS})
    return CAMNet(**params)

"""The original study's custom CNN, for one-channel input of any size (128 px in the study).

Stacked Conv-ReLU-BatchNorm-MaxPool blocks and a dense head with dropout, as the study
describes; an adaptive pooling before the head lets 224 px input use the same network.
"""

from __future__ import annotations

from torch import nn

from pneumo.models.registry import ModelSpec, register_model


class StudyCNN(nn.Module):
    """Four convolution blocks (32-64-128-256 channels), then Dense(128) + Dropout(0.5)."""

    def __init__(self, num_classes: int = 3, channels: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.5):
        super().__init__()
        blocks: list[nn.Module] = []
        previous = 1
        for width in channels:
            blocks += [
                nn.Conv2d(previous, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(previous * 16, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):  # x: (B, 1, H, W) in [0, 1]
        return self.head(self.pool(self.features(x)))  # (B, num_classes)


def _build(num_classes: int, pretrained: str | None) -> nn.Module:
    if pretrained:
        raise ValueError("The 'cnn' model has no pretrained weights; leave --pretrained out.")
    return StudyCNN(num_classes)


register_model(ModelSpec("cnn", _build, classifier="head", cam_layer="features.14",
                         description="the study's custom CNN (4 Conv-ReLU-BN-MaxPool blocks, dense head)"))

"""Hand-written PyTorch references that netdsl's lowering is compared with (tests and bench/).

Written directly from the paper and DESIGN.md, without netdsl, so that agreement means something.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PaperAlexNet(nn.Module):
    """AlexNet as Krizhevsky et al. (2012) trained it, on one device: the two towers as groups=2.

    cuda-convnet2 rounds up: (224 - 11) / 4 + 1 = 54.25 -> 55, i.e. 3 extra zero rows and columns at
    the bottom/right. LRN (k=2, n=5, alpha=1e-4, beta=0.75) and pooling see one tower's channels.
    Returns logits (the spec's softmax is left to the caller).
    """

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, classes)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.drop = nn.Dropout(0.5)

    def tower_lrn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lrn(half) for half in x.chunk(2, dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(F.pad(x, (0, 3, 0, 3))), inplace=True)
        x = self.pool(self.tower_lrn(x))
        x = self.pool(self.tower_lrn(F.relu(self.conv2(x), inplace=True)))
        x = F.relu(self.conv3(x), inplace=True)
        x = F.relu(self.conv4(x), inplace=True)
        x = self.pool(F.relu(self.conv5(x), inplace=True))
        x = torch.flatten(x, 1)
        x = self.drop(F.relu(self.fc6(x), inplace=True))
        x = self.drop(F.relu(self.fc7(x), inplace=True))
        return self.fc8(x)


# torchvision.models.alexnet() module paths -> layer names of specs/alexnet-torchvision.net.
TORCHVISION_ALEXNET = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
                       "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}


def rename_state_dict(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys by their module path: with TORCHVISION_ALEXNET, `features.0.weight` -> `conv1.weight`."""
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            raise KeyError(f"no layer name for '{key}' in the name map")
        out[f"{names[module]}.{leaf}"] = value
    return out

"""insightface arcface_torch iResNet-18/34/50/100: our own implementation (same parameter names).

Weights: an arcface_torch backbone state dict (--weights). Input: 112x112, (x / 255 - 0.5) / 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import UsageError
from synthgen.fsutil import sha256_file

from .base import TorchMatcher, load_state, strict_load


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


IRESNET_LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}


class IResNet(nn.Module):
    def __init__(self, layers, num_features=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
            blocks = [IBasicBlock(inplanes, planes, 2, down)] + [IBasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class IResNetMatcher(TorchMatcher):
    name = "iresnet"

    def __init__(self, weights, arch="r100", device="cpu"):
        if weights is None:
            raise UsageError("--matcher iresnet needs --weights FILE (an arcface_torch backbone .pth)", "--weights")
        if arch not in IRESNET_LAYERS:
            raise UsageError(f"'{arch}' is not one of {', '.join(IRESNET_LAYERS)}", "--arch")
        sd = load_state(weights, "iResNet")
        n_feat = sd["fc.weight"].shape[0] if "fc.weight" in sd and sd["fc.weight"].ndim == 2 else 512
        model = IResNet(IRESNET_LAYERS[arch], n_feat)
        strict_load(model, sd, weights, f"arcface_torch iResNet-{arch[1:]}")
        self.name = f"iresnet-{arch}"
        super().__init__(model, device, sha256_file(weights))

    def preprocess(self, x):
        if x.shape[-1] != 112:
            x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
        return (x / 255.0 - 0.5) / 0.5



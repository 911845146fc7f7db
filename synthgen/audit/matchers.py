"""Face matchers behind one protocol: uint8 RGB aligned crops -> L2-normalised embeddings.

    name, id (name + weights sha256: the cache key), embed(images NHWC uint8) -> float32 [N, D]

facenet-*   facenet-pytorch InceptionResnetV1 (weights file as the package's release publishes
            it, logits head included, or the package's own download-and-cache when online).
            Input: crop resized to 160x160, standardised (x - 127.5) / 128.
iresnet     insightface arcface_torch iResNet-18/34/50/100 state dicts; our own implementation
            of the architecture. Input: 112x112, (x / 255 - 0.5) / 0.5.
onnx        an insightface-style ONNX recogniser through onnxruntime (optional extra).
embeddings  precomputed embeddings (see audit.embed.load_embeddings_file); no network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import DataError, UsageError
from synthgen.fsutil import sha256_file
from synthgen.safeload import safe_torch_load

FACENET_CLASSES = {"facenet-vggface2": 8631, "facenet-casia": 10575}  # the release files' logits heads
FACENET_RELEASES = {
    "facenet-vggface2": ("vggface2", "20180402-114759-vggface2.pt"),
    "facenet-casia": ("casia-webface", "20180408-102900-casia-webface.pt"),
}


def _load_state(path, what):
    sd = safe_torch_load(path, f"{what} weights")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise DataError(f"{path}: expected a state dict of {what} weights (names -> tensors), got "
                        f"{type(sd).__name__}{' with other contents' if isinstance(sd, dict) else ''}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _strict_load(model: nn.Module, sd: dict, path, what):
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise DataError(
            f"{path}: not {what} weights: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(sd, strict=True)


class _TorchMatcher:
    input_size = 112

    def __init__(self, model, device, weights_sha256):
        self.device = device
        # channels_last: oneDNN/cuDNN's fast layout (CPU here, model alone: iResNet-50 +18%)
        self.model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.weights_sha256 = weights_sha256

    @property
    def id(self) -> str:
        return f"{self.name}-{self.weights_sha256[:16]}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            e = self.model(self.preprocess(x).contiguous(memory_format=torch.channels_last)).float()
        return F.normalize(e, dim=1).cpu().numpy().astype(np.float32)


class FacenetMatcher(_TorchMatcher):
    def __init__(self, name="facenet-vggface2", weights=None, device="cpu"):
        from facenet_pytorch import InceptionResnetV1

        self.name = name
        pretrained, filename = FACENET_RELEASES[name]
        if weights is None:
            try:
                model = InceptionResnetV1(pretrained=pretrained)
            except Exception as e:
                raise DataError(
                    f"--matcher {name}: could not download its weights ({type(e).__name__}). Offline, fetch "
                    f"'{filename}' from facenet-pytorch's GitHub release (v2.2.9) on a connected machine and "
                    f"pass it with --weights FILE, or put it in $TORCH_HOME/checkpoints/"
                ) from None
            sha = hashlib_state(model.state_dict())
        else:
            sd = _load_state(weights, "InceptionResnetV1")
            model = InceptionResnetV1(pretrained=None, classify=False)
            head = sd.get("logits.weight")
            if isinstance(head, torch.Tensor) and head.ndim == 2:
                # The release files hold the classifier head: facenet-pytorch creates `logits`
                # (8631 or 10575 classes) before loading them. We load it too and never use it.
                n_cls = head.shape[0]
                other = {v: k for k, v in FACENET_CLASSES.items()}.get(n_cls)
                if other is not None and other != name:
                    raise DataError(f"{weights}: has a {n_cls}-class head, the {other} release; use "
                                    f"--matcher {other} (this file was given for --matcher {name})")
                model.logits = nn.Linear(512, n_cls)
            _strict_load(model, sd, weights, "facenet-pytorch InceptionResnetV1")
            sha = sha256_file(weights)
        super().__init__(model, device, sha)

    def preprocess(self, x):
        if x.shape[-1] != 160:
            x = F.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False)
        return (x - 127.5) / 128.0


def hashlib_state(sd) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# insightface arcface_torch iResNet, our own implementation (same parameter names)


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


class IResNetMatcher(_TorchMatcher):
    name = "iresnet"

    def __init__(self, weights, arch="r100", device="cpu"):
        if weights is None:
            raise UsageError("--matcher iresnet needs --weights FILE (an arcface_torch backbone .pth)", "--weights")
        if arch not in IRESNET_LAYERS:
            raise UsageError(f"'{arch}' is not one of {', '.join(IRESNET_LAYERS)}", "--arch")
        sd = _load_state(weights, "iResNet")
        n_feat = sd["fc.weight"].shape[0] if "fc.weight" in sd and sd["fc.weight"].ndim == 2 else 512
        model = IResNet(IRESNET_LAYERS[arch], n_feat)
        _strict_load(model, sd, weights, f"arcface_torch iResNet-{arch[1:]}")
        self.name = f"iresnet-{arch}"
        super().__init__(model, device, sha256_file(weights))

    def preprocess(self, x):
        if x.shape[-1] != 112:
            x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
        return (x / 255.0 - 0.5) / 0.5


class OnnxMatcher:
    """insightface-style ONNX recogniser: NCHW float input, 112x112 in [-1, 1] by default."""

    name = "onnx"
    input_size = 112

    def __init__(self, weights, device="cpu"):
        if weights is None:
            raise UsageError("--matcher onnx needs --weights FILE.onnx", "--weights")
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError("--matcher onnx needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)", "--matcher") from None
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else ["CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(str(weights), providers=providers)
        except Exception as e:
            raise DataError(f"{weights}: not a loadable ONNX model ({type(e).__name__}: {e})") from None
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.input_size = shape[2] if isinstance(shape[2], int) else 112
        self.weights_sha256 = sha256_file(weights)

    @property
    def id(self):
        return f"onnx-{self.weights_sha256[:16]}"

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = ((x / 255.0 - 0.5) / 0.5).numpy()
        e = self.sess.run(None, {self.input_name: x})[0].astype(np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


MATCHERS = ("facenet-vggface2", "facenet-casia", "iresnet", "onnx", "embeddings")


def make_matcher(name: str, weights=None, arch="r100", device="cpu"):
    if name in FACENET_RELEASES:
        return FacenetMatcher(name, weights, device)
    if name == "iresnet":
        return IResNetMatcher(weights, arch, device)
    if name == "onnx":
        return OnnxMatcher(weights, device)
    raise UsageError(f"'{name}' is not one of {', '.join(MATCHERS)}", "--matcher")

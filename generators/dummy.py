"""A tiny deterministic generator backend: the test double of the generator axis.

File: JSON `{"format": "synthgen.dummy-generator", "version": 1, "z_dim": 8, "c_dim": 4,
"resolution": 16, "seed": 0}`. Images are a fixed random projection of (z, class) into a
coarse 4x4 colour pattern, upsampled: deterministic, instant, different per latent and class,
and the same whatever the batch. Not a face generator. Use it to test or demo the pipeline
machinery (`generate`, resume, sharding) without a network file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from synthgen.errors import DataError, UsageError

FORMAT = "synthgen.dummy-generator"
NUM_WS = 2


def sniff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip().startswith(b'{"format": "' + FORMAT.encode())


def write(path, z_dim: int = 8, c_dim: int = 4, resolution: int = 16, seed: int = 0) -> Path:
    """Write a dummy generator file (its whole definition is these four numbers)."""
    path = Path(path)
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "z_dim": z_dim, "c_dim": c_dim,
                                "resolution": resolution, "seed": seed}))
    return path


class DummyGenerator:
    backend = "dummy"
    source_format = FORMAT
    img_channels = 3
    num_ws = NUM_WS

    def __init__(self, spec: dict, device="cpu", precision="auto", sha256=None, source=None):
        import torch

        from synthgen.device import resolve_device

        self.z_dim, self.c_dim, self.resolution = spec["z_dim"], spec["c_dim"], spec["resolution"]
        self.w_dim = 16
        self.device = resolve_device(device)
        self.precision = "fp32"
        self.sha256, self.source, self.provenance = sha256, source, {}
        g = torch.Generator().manual_seed(int(spec["seed"]))
        self._a = torch.randn(self.z_dim + self.c_dim, self.w_dim, generator=g, dtype=torch.float64)
        self._p = torch.randn(self.w_dim, 3 * 16, generator=g, dtype=torch.float64)
        self.noise_shapes = [(self.resolution, self.resolution)]

    def map(self, z, classes=None, psi: float = 1.0, truncation_cutoff=None):
        import torch

        z = torch.as_tensor(np.asarray(z, np.float64))
        c = torch.zeros(len(z), self.c_dim, dtype=torch.float64)
        if self.c_dim:
            for i, k in enumerate(classes or []):
                if k is None or not 0 <= int(k) < self.c_dim:
                    raise UsageError(f"class {k} is out of range: this generator has {self.c_dim} classes", "--classes")
                c[i, int(k)] = 1
        w = torch.tanh(torch.cat([z, c], 1) @ self._a / np.sqrt(self.z_dim + self.c_dim))  # row by row: batch-free
        ws = w.unsqueeze(1).repeat(1, NUM_WS, 1)
        cut = NUM_WS if truncation_cutoff is None else truncation_cutoff
        ws[:, :cut] = ws[:, :cut] * psi  # w_avg = 0
        return ws

    def synthesize(self, ws, noise_mode: str = "const", noise_seeds=None):
        import torch

        x = torch.tanh(ws[:, 0].double() @ self._p).reshape(-1, 3, 4, 4)
        img = x.repeat_interleave(self.resolution // 4, 2).repeat_interleave(self.resolution // 4, 3)
        if noise_mode == "random":
            noise = [torch.randn(1, 1, self.resolution, self.resolution, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(int(s))) for s in noise_seeds]
            img = img + 0.1 * torch.cat(noise)
        return img.float()

    def sample(self, z, classes=None, psi=1.0, truncation_cutoff=None, noise_mode="const", noise_seeds=None):
        from .images import to_uint8

        return to_uint8(self.synthesize(self.map(z, classes, psi, truncation_cutoff), noise_mode, noise_seeds))

    def describe(self) -> dict:
        return {"backend": self.backend, "source_format": self.source_format, "resolution": self.resolution,
                "img_channels": 3, "c_dim": self.c_dim, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "num_ws": NUM_WS, "parameters": int(self._a.numel() + self._p.numel()), "sha256": self.sha256}


def load(path, device="cpu", force_fp32=False, precision="auto") -> DummyGenerator:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a dummy generator file ({e})") from None
    ok = (isinstance(spec, dict) and spec.get("format") == FORMAT and spec.get("version") == 1
          and all(type(spec.get(k)) is int for k in ("z_dim", "c_dim", "resolution", "seed"))
          and 1 <= spec["z_dim"] <= 512 and 0 <= spec["c_dim"] <= 100_000 and spec["resolution"] in (4, 8, 16, 32, 64, 128))
    if not ok:
        raise DataError(f"{path}: dummy generator spec must have integer z_dim (1-512), c_dim (0-100000), "
                        "resolution (4-128, a power of two) and seed")
    if precision == "fp16":
        raise UsageError("the dummy generator runs in fp32 only", "--precision")
    return DummyGenerator(spec, device, precision, hashlib.sha256(path.read_bytes()).hexdigest(), str(path))

"""Shared helpers for the benchmark scripts (not part of the library)."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sface_like_config(c_dim=10572):
    """A 128 px class-conditional StyleGAN2-ADA as `train.py --cfg=auto` builds it for 128 px
    (channel_base 16384, channel_max 512, 2 mapping layers, 4 fp16 resolutions, conv_clamp 256)."""
    from synthgen.generators.stylegan2ada import StyleGAN2Config

    return StyleGAN2Config.from_hyperparams(z_dim=512, c_dim=c_dim, w_dim=512, img_resolution=128,
                                            mapping_layers=2, channel_base=16384, channel_max=512,
                                            num_fp16_res=4, conv_clamp=256)


def make_sface_like_checkpoint(path, seed=0):
    from synthgen.generators.stylegan2ada import random_init, save_checkpoint

    path = Path(path)
    if not path.exists():
        cfg = sface_like_config()
        save_checkpoint(path, cfg, random_init(cfg, seed).state_dict(), {"source_format": "random-init"})
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} | {cpu} | {torch.get_num_threads()} torch threads | {gpu} | torch {torch.__version__}"

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores: avoid oversubscription slowdowns

DATA = Path(__file__).parent / "data"
MICRO = DATA / "stylegan2ada_micro"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TINY = SHARED / "stylegan2ada_tiny"


@pytest.fixture
def micro_pkl():
    return MICRO / "network-scrubbed-p4.pkl"


def require_tiny():
    if not (TINY / "network-scrubbed-p4.pkl").is_file():
        pytest.skip(f"{TINY} not present (CI has ../shared/fixtures; the 24 MB pickles are not in the repo)")
    return TINY


@pytest.fixture(scope="session")
def uncond_ckpt(tmp_path_factory):
    """A tiny unconditional random-init generator saved in our checkpoint format."""
    from synthgen.generators.stylegan2ada import StyleGAN2Config, random_init, save_checkpoint

    cfg = StyleGAN2Config.from_hyperparams(z_dim=32, c_dim=0, w_dim=32, img_resolution=16,
                                           mapping_layers=2, channel_base=256, channel_max=32,
                                           num_fp16_res=2, conv_clamp=256)
    net = random_init(cfg, seed=1)
    path = tmp_path_factory.mktemp("uncond") / "uncond.pt"
    save_checkpoint(path, cfg, net.state_dict(), {"source_format": "random-init"})
    return path

"""Our StyleGAN2-ADA network reproduces NVIDIA's reference outputs from the fixture pickles."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MICRO, require_tiny
from synthgen.errors import UsageError
from synthgen.generators import load_generator
from synthgen.generators.stylegan2ada import StyleGAN2Config, StyleGAN2Network, to_uint8


def check_fixture(folder, pkl_name):
    G = load_generator(folder / pkl_name)
    ref = np.load(folder / "ref_outputs.npz")
    state = np.load(folder / "g_ema_state.npz")
    sd = G.state_dict()
    assert sorted(sd) == sorted(state.files)
    for k in state.files:  # G_ema, bit for bit (not G, which differs by noise)
        np.testing.assert_array_equal(sd[k].numpy(), state[k], err_msg=k)
    for p, psi in enumerate(ref["psis"]):
        ws = G.map(ref["z"], ref["classes"], psi=float(psi))
        np.testing.assert_allclose(ws.numpy(), ref["ws"][p], atol=1e-5, rtol=0)
        img = G.synthesize(ws, noise_mode="const")
        np.testing.assert_allclose(img.numpy(), ref["img_fp32__const"][p], atol=1e-4, rtol=0)
        np.testing.assert_allclose(img.numpy(), ref["img__const"][p], atol=3e-3, rtol=0)
        ours = to_uint8(img).astype(int)
        # Our uint8 conversion applied to the reference's own output gives its PNGs exactly.
        np.testing.assert_array_equal(to_uint8(torch.from_numpy(ref["img__const"][p])), ref["png_uint8__const"][p])
        # Against the reference fp32 output converted the same way: a value may sit within our
        # ~2e-6 float difference of a rounding boundary, so allow 1 level on very few values.
        diff = np.abs(ours - to_uint8(torch.from_numpy(ref["img_fp32__const"][p])))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        # Reference PNGs (written through fp16 blocks): within 1 level, decoded pixels.
        for i, (seed, cls) in enumerate(zip(ref["seeds"], ref["classes"])):
            name = f"trunc{psi:g}/class{cls}/seed{seed:04d}.png"
            png = np.asarray(Image.open(folder / "png" / "noise-const" / name).convert("RGB")).astype(int)
            np.testing.assert_array_equal(png, ref["png_uint8__const"][p][i])
            assert np.abs(ours[i] - png).max() <= 1, name


@pytest.mark.parametrize("pkl", ["network-scrubbed-p3.pkl", "network-scrubbed-p4.pkl"])
def test_micro_fixture_reproduced(pkl):
    check_fixture(MICRO, pkl)


@pytest.mark.parametrize("pkl", ["network-scrubbed-p3.pkl", "network-scrubbed-p4.pkl"])
def test_tiny_fixture_reproduced(pkl):
    check_fixture(require_tiny(), pkl)


def test_hyperparameters_read_from_file(micro_pkl):
    G = load_generator(micro_pkl)
    d = G.describe()
    assert (d["z_dim"], d["w_dim"], d["c_dim"], d["resolution"], d["num_ws"]) == (64, 64, 4, 16, 6)
    assert d["channels"] == {"4": 32, "8": 32, "16": 16}
    assert d["fp16_blocks"] == [8, 16] and d["conv_clamp"] == 256
    assert d["parameters"] == 62750 and d["buffers"] == 848


def test_truncation_cutoff_only_truncates_first_ws(micro_pkl):
    G = load_generator(micro_pkl)
    z = np.random.RandomState(3).randn(2, 64)
    full = G.map(z, [0, 1], psi=1.0)
    cut = G.map(z, [0, 1], psi=0.5, truncation_cutoff=2)
    w_avg = G.net.mapping.w_avg
    torch.testing.assert_close(cut[:, :2], w_avg.lerp(full[:, :2], 0.5))
    torch.testing.assert_close(cut[:, 2:], full[:, 2:])


def test_noise_modes(micro_pkl):
    G = load_generator(micro_pkl)
    z = np.random.RandomState(0).randn(2, 64)
    ws = G.map(z, [0, 1])
    const = G.synthesize(ws, "const")
    none = G.synthesize(ws, "none")
    r1 = G.synthesize(ws, "random", noise_seeds=[5, 6])
    r2 = G.synthesize(ws, "random", noise_seeds=[5, 7])
    assert not torch.equal(const, none) and not torch.equal(const, r1)
    torch.testing.assert_close(r1[0], r2[0], atol=0, rtol=0)  # same seed, same noise
    assert not torch.equal(r1[1], r2[1])


def test_bad_inputs_to_generator(micro_pkl, uncond_ckpt):
    G = load_generator(micro_pkl)
    z = np.zeros((1, 64))
    with pytest.raises(UsageError, match=r"--classes.*4 classes \(0-3\)"):
        G.map(z, [4])
    with pytest.raises(UsageError, match="--psi"):
        G.map(z, [0], psi=float("nan"))
    U = load_generator(uncond_ckpt)
    assert U.c_dim == 0
    with pytest.raises(UsageError, match="unconditional"):
        U.map(np.zeros((1, 32)), [1])
    assert U.sample(np.zeros((2, 32))).shape == (2, 16, 16, 3)


def test_from_hyperparams_matches_nvidia_rules():
    cfg = StyleGAN2Config.from_hyperparams(img_resolution=128, c_dim=10572, num_fp16_res=4, conv_clamp=256)
    assert cfg.synthesis.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256}
    assert cfg.synthesis.fp16_resolutions == [16, 32, 64, 128]
    assert cfg.num_ws == 12
    assert StyleGAN2Config.from_dict(cfg.to_dict()) == cfg
    net = StyleGAN2Network(StyleGAN2Config.from_hyperparams(img_resolution=8, z_dim=8, w_dim=8, channel_max=8))
    assert net(torch.zeros(1, 8), torch.zeros(1, 0)).shape == (1, 3, 8, 8)

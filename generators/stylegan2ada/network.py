"""StyleGAN2-ADA generator network, written for synthgen in plain PyTorch.

It follows the architecture described in Karras et al., "Training Generative Adversarial
Networks with Limited Data" (NeurIPS 2020), in the configuration that NVIDIA's
stylegan2-ada-pytorch pickles store: a mapping network with a label embedding and
second-moment normalisation, and a synthesis network of "skip" blocks built from
modulated/demodulated 3x3 convolutions, FIR up-sampling and toRGB layers.

Parameter and buffer names equal the state-dict names of those pickles, so weights load with
`load_state_dict(strict=True)`. Weights are stored unscaled; the equalised-learning-rate gains
are applied at run time and are part of the config (read from the file, never assumed).

No compiled extensions: the custom CUDA ops of the reference are replaced by standard torch
ops (`conv2d`, `conv_transpose2d`, depthwise FIR via grouped `conv2d`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_INIT = [True]  # False inside uninitialized(): parameters are allocated, not filled


def _randn(*shape) -> torch.Tensor:
    return torch.randn(*shape) if _INIT[0] else torch.empty(*shape)


@contextmanager
def uninitialized():
    """Build networks whose random-normal parameters are left unfilled (torch.empty): for a network
    that loads every tensor from a file next (drawing 28 M normals for an SFace-sized net costs
    ~0.35 s), or, on the meta device, only gives shapes: there no random or arithmetic op may run,
    since the first one imports torch._dynamo and sympy (~2 s)."""
    old, _INIT[0] = _INIT[0], False
    try:
        yield
    finally:
        _INIT[0] = old

LRELU_SLOPE = 0.2
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
SUPPORTED_ARCHITECTURES = ("skip",)


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class MappingConfig:
    num_layers: int = 8  # FC layers after the (z, embedded c) concatenation
    embed_features: int | None = None  # label embedding width; None -> w_dim; 0 when c_dim == 0
    layer_features: int | None = None  # hidden width; None -> w_dim
    activation: str = "lrelu"  # of the hidden FC layers
    lr_multiplier: float = 0.01  # equalised-lr multiplier of the hidden FC layers
    w_avg_beta: float | None = 0.995  # only used in training; kept for provenance


@dataclass
class SynthesisConfig:
    channels: dict[int, int] = field(default_factory=dict)  # output channels per resolution
    fp16_resolutions: list[int] = field(default_factory=list)  # blocks run in fp16 on CUDA
    conv_clamp: float | None = 256.0  # clamp of conv/toRGB outputs; None = no clamp
    architecture: str = "skip"
    use_noise: bool = True
    resample_filter: list[float] = field(default_factory=lambda: [1.0, 3.0, 3.0, 1.0])


@dataclass
class StyleGAN2Config:
    """Everything needed to rebuild the network; saved as JSON in our checkpoints."""

    z_dim: int
    c_dim: int  # 0 = unconditional
    w_dim: int
    img_resolution: int
    img_channels: int = 3
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    @classmethod
    def from_hyperparams(
        cls,
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=128,
        img_channels=3,
        mapping_layers=8,
        channel_base=32768,
        channel_max=512,
        num_fp16_res=0,
        conv_clamp=None,
    ) -> "StyleGAN2Config":
        """Build a config the way StyleGAN2-ADA derives one from its training options."""
        log2 = int(math.log2(img_resolution))
        if 2**log2 != img_resolution or img_resolution < 4:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in resolutions}
        fp16_from = max(2 ** (log2 + 1 - num_fp16_res), 8)
        return cls(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            mapping=MappingConfig(num_layers=mapping_layers),
            synthesis=SynthesisConfig(
                channels=channels,
                fp16_resolutions=[r for r in resolutions if r >= fp16_from],
                conv_clamp=conv_clamp,
            ),
        )

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        # Each block but the first has 2 convs; the first has 1; the last block adds its toRGB.
        return 2 * len(self.block_resolutions)

    def validate(self) -> None:
        s = self.synthesis
        if s.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"synthesis architecture {s.architecture!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        missing = [r for r in self.block_resolutions if r not in s.channels]
        if missing:
            raise ValueError(f"synthesis.channels lacks resolutions {missing}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["synthesis"]["channels"] = {str(k): v for k, v in self.synthesis.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGAN2Config":
        d = dict(d)
        mapping = MappingConfig(**d.pop("mapping", {}))
        syn = dict(d.pop("synthesis", {}))
        syn["channels"] = {int(k): int(v) for k, v in syn.get("channels", {}).items()}
        syn["fp16_resolutions"] = [int(r) for r in syn.get("fp16_resolutions", [])]
        cfg = cls(mapping=mapping, synthesis=SynthesisConfig(**syn), **d)
        cfg.validate()
        return cfg


# ----------------------------------------------------------------------------------------------
# Primitive ops


def bias_act(x, b, act="linear", gain=None, clamp=None):
    """x + b (broadcast over dim 1), activation, gain, optional symmetric clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    gain = ACTIVATION_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def upfirdn2d(x, f, up=1, pad=(0, 0, 0, 0), gain=1.0):
    """Zero-insertion up-sampling by `up`, padding (x0, x1, y0, y1), then 2-D FIR filter `f`.

    Convolution (not correlation) with `f`, done as a depthwise conv2d with the flipped filter.
    Negative padding crops.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    k = (f * gain).to(x.dtype).flip([0, 1])
    k = k[None, None].expand(c, 1, *k.shape)
    return F.conv2d(x, k, groups=c)


def upsample2d(x, f, up=2):
    """2x up-sampling with the FIR filter `f` (output size = up * input size)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, padding=0, resample_filter=None, gain=1.0):
    """Style-modulated convolution, one weight per sample, computed without per-sample weights.

    Modulating the input channels and demodulating the output channels is the same maths as
    scaling the weight per sample (out = conv(x * s, W) * d), but runs as a single ordinary
    convolution over the batch. `gain` is folded into the demodulation scale. Activations are
    channels_last, the layout oneDNN and cuDNN convolve fastest (2-3x on CPU here).
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Keep fp16 activations in range: rescale weight and styles (demodulation undoes it).
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate:
        # sum over (in, kh, kw) of (W * s)^2 = s^2 @ sum_k W^2: no per-sample weight tensor.
        w2 = weight.square().sum(dim=[2, 3])  # [out, in]
        dcoefs = (styles.square() @ w2.t() + 1e-8).rsqrt()  # [n, out]
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    wt = weight.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, wt.contiguous(memory_format=torch.channels_last), padding=padding)
    else:
        # Transposed strided conv (zero insertion + conv) followed by the FIR low-pass filter.
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        x = F.conv_transpose2d(x, wt.transpose(0, 1).contiguous(memory_format=torch.channels_last), stride=up)
        x = upfirdn2d(x, resample_filter, pad=(p0, p1, p0, p1), gain=up * up)
    if dcoefs is not None:
        x.mul_((dcoefs * gain).to(x.dtype).reshape(n, -1, 1, 1))  # x is a fresh tensor here
    elif gain != 1:
        x.mul_(gain)
    return x


def _fp16_styles_weight(weight, styles):
    """fp16 blocks: scale each output filter of `weight` to max |w| = 1/sqrt(fan_in) and each
    sample's styles to max |s| = 1, in fp32, so that fp16 activations stay in range. Demodulation
    divides the scale out again. Written in the same op order as NVIDIA's generate.py runs it
    (reciprocal of the norm times the fp32-rounded constant), so the rounding matches."""
    out_ch, in_ch, kh, kw = weight.shape
    inv_fan_in = 1.0 / math.sqrt(in_ch * kh * kw)
    weight = weight * (weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True).reciprocal() * inv_fan_in)
    styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def modulated_conv2d_ref(x, weight, styles, demodulate=True, up=1, padding=0, resample_filter=None, noise=None):
    """Modulated convolution in the reference's numerics, for fp16 blocks (and, in batch-1 fp16
    runs, the fp32 blocks too).

    x is float16 (fp16 block) or float32; weight and styles are float32. Returns
    conv(x) [* demodulation] [+ noise] in x's dtype, before bias and activation. Two
    formulations, chosen by the batch size (a fixed chunk size fixes the choice too), the
    same rule as the reference at inference:
    * batch 1: per-sample weight W * s * d computed in fp32, cast to x's dtype, one grouped
      convolution, noise added in place. NVIDIA's generate.py runs batch 1, so
      `--chunk-size 1` rounds exactly where it does (tested: bit-identical fp16 images on CPU).
    * batch > 1 (fp16 blocks only): activations scaled by the styles in fp16, one shared fp16
      weight, then x * d + noise in one addcmul; no per-sample weights, tensor-core friendly.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if demodulate and x.dtype == torch.float16:
        weight, styles = _fp16_styles_weight(weight, styles)
    if n == 1:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [n, out, in, kh, kw], fp32
        if demodulate:
            d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            w = w * d.reshape(n, out_ch, 1, 1, 1)
        x = x.reshape(1, n * in_ch, *x.shape[2:])
        if up == 1:
            x = F.conv2d(x, w.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype), padding=padding, groups=n)
        else:
            wt = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw).to(x.dtype)
            x = F.conv_transpose2d(x, wt, stride=up, groups=n)
            x = upfirdn2d(x, resample_filter, pad=_up_pad(padding, resample_filter, up, kw), gain=up * up)
        x = x.reshape(n, out_ch, *x.shape[2:])
        if noise is not None:
            x.add_(noise)  # fp32 noise added into the fp16 tensor (computed in fp32, rounded once)
        return x
    d = None
    if demodulate:
        w2 = weight.square().sum(dim=[2, 3])  # sum over (in, kh, kw) of (W s)^2 = s^2 @ sum_k W^2
        d = (styles.square() @ w2.t() + 1e-8).rsqrt()
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    wt = weight.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, wt, padding=padding)
    else:
        x = F.conv_transpose2d(x, wt.transpose(0, 1), stride=up)
        x = upfirdn2d(x, resample_filter, pad=_up_pad(padding, resample_filter, up, kw), gain=up * up)
    if d is not None:
        nz = noise.to(x.dtype) if noise is not None else torch.zeros((), dtype=x.dtype, device=x.device)
        x = torch.addcmul(nz, x, d.to(x.dtype).reshape(n, -1, 1, 1))
    elif noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x


def _up_pad(padding, f, up, kw):
    """Padding of the FIR filter after a stride-`up` transposed conv (output = up * input)."""
    fw = f.shape[-1]
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    return (p0, p1, p0, p1)


# ----------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(_randn(out_features, in_features) / lr_multiplier if _INIT[0] else
                                   torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, cfg: MappingConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        embed = (w_dim if cfg.embed_features is None else cfg.embed_features) if c_dim else 0
        hidden = w_dim if cfg.layer_features is None else cfg.layer_features
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed)
        features = [z_dim + embed] + [hidden] * (cfg.num_layers - 1) + [w_dim]
        self.num_layers = cfg.num_layers
        for i in range(cfg.num_layers):
            layer = FullyConnectedLayer(features[i], features[i + 1], cfg.activation, cfg.lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, psi=1.0, truncation_cutoff=None):
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], psi)
        return ws


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, resolution, up, use_noise, conv_clamp, kernel_size=3):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.activation = "lrelu"
        self.act_gain = ACTIVATION_GAIN[self.activation]
        self.affine = FullyConnectedLayer(w_dim, in_ch, bias_init=1)
        self.weight = nn.Parameter(_randn(out_ch, in_ch, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", _randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_ch]))
        self.register_buffer("resample_filter", torch.zeros(4, 4))  # set by the block

    def forward(self, x, w, noise_mode="const", noise=None, ref=False):
        styles = self.affine(w)
        if ref or x.dtype == torch.float16:
            return self._forward_ref(x, styles, noise_mode, noise)
        f = self.resample_filter if self.up > 1 else None
        g = self.act_gain  # lrelu(y) * g == lrelu(y * g) for g > 0: fold the gain in early
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding, resample_filter=f, gain=g)
        # In place on the fresh conv output: each full-size pass costs as much as a small conv.
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                n = self.noise_const * (self.noise_strength * g)
            else:  # "random": per-sample noise supplied by the caller (seeded per image)
                n = noise * (self.noise_strength * g)
            x.add_(n.to(x.dtype))
        x.add_((self.bias * g).to(x.dtype).reshape(1, -1, 1, 1))
        F.leaky_relu(x, LRELU_SLOPE, inplace=True)
        if self.conv_clamp is not None and self.conv_clamp >= 0:
            x.clamp_(-self.conv_clamp, self.conv_clamp)
        return x

    def _forward_ref(self, x, styles, noise_mode, noise):
        """fp16 blocks, and every block of a batch-1 fp16 run: the reference's op order (no
        folded gains), so every intermediate rounds (to fp16 in fp16 blocks) where NVIDIA's
        generate.py rounds."""
        n = None
        if self.use_noise and noise_mode != "none":
            n = self.noise_const * self.noise_strength if noise_mode == "const" else noise * self.noise_strength
        f = self.resample_filter if self.up > 1 else None
        x = modulated_conv2d_ref(x, self.weight, styles, up=self.up, padding=self.padding, resample_filter=f, noise=n)
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, conv_clamp, kernel_size=1):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_ch, bias_init=1)
        self.weight = nn.Parameter(_randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros([out_ch]))
        self.weight_gain = 1 / math.sqrt(in_ch * kernel_size * kernel_size)

    def forward(self, x, w, ref=False):
        styles = self.affine(w) * self.weight_gain
        if ref or x.dtype == torch.float16:
            x = modulated_conv2d_ref(x, self.weight, styles, demodulate=False)
        else:
            x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, resolution, img_channels, use_fp16, cfg: SynthesisConfig):
        super().__init__()
        self.in_ch, self.resolution, self.use_fp16 = in_ch, resolution, use_fp16
        self.register_buffer("resample_filter", make_filter(cfg.resample_filter))
        clamp = cfg.conv_clamp
        if in_ch == 0:
            self.const = nn.Parameter(_randn(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, 2, cfg.use_noise, clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, 1, cfg.use_noise, clamp)
        for conv in (getattr(self, "conv0", None), self.conv1):
            if conv is not None:
                conv.resample_filter.copy_(self.resample_filter)
        self.torgb = ToRGBLayer(out_ch, img_channels, w_dim, clamp)
        self.num_conv = 1 if in_ch == 0 else 2
        self.num_torgb = 1

    def forward(self, x, img, ws, dtype, noise_mode="const", noise=(), ref=False):
        if self.in_ch == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = x.contiguous(memory_format=torch.channels_last)  # one copy, in oneDNN/cuDNN's fast layout
            convs = [self.conv1]
        else:
            # fp16 blocks run in the standard layout, as the reference's fp16 blocks do
            x = x.to(dtype, memory_format=torch.contiguous_format) if dtype == torch.float16 else x.to(dtype)
            convs = [self.conv0, self.conv1]
        for i, conv in enumerate(convs):
            x = conv(x, ws[:, i], noise_mode, noise[i] if noise else None, ref=ref)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, len(convs)], ref=ref).to(torch.float32)
        img = y if img is None else img + y
        return x, img


def make_filter(taps) -> torch.Tensor:
    """The normalised 2-D resampling filter, computed on the CPU and moved to the default device:
    arithmetic on the meta device (check_state's shape-only network) imports torch._dynamo (~2 s)."""
    f = torch.as_tensor(taps, dtype=torch.float32, device="cpu")
    if f.ndim == 1:
        f = torch.outer(f, f)
    return (f / f.sum()).to(torch.get_default_device())


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, cfg: SynthesisConfig, resolutions):
        super().__init__()
        self.block_resolutions = resolutions
        self.fp16_resolutions = set(cfg.fp16_resolutions)
        for res in resolutions:
            in_ch = cfg.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(
                in_ch, cfg.channels[res], w_dim, res, img_channels, res in self.fp16_resolutions, cfg
            )
            setattr(self, f"b{res}", block)
        self.noise_shapes = [
            (res, res) for res in resolutions for _ in range(getattr(self, f"b{res}").num_conv)
        ] if cfg.use_noise else []

    def forward(self, ws, noise_mode="const", noise=None, use_fp16=False):
        x = img = None
        w_idx = n_idx = 0
        # A batch-1 fp16 run rounds like NVIDIA's generate.py everywhere, including its fp32
        # blocks, whose output feeds the fp16 casts (our faster fp32 formulation differs from
        # the reference by ~1e-7, enough to flip fp16 roundings downstream).
        ref = use_fp16 and ws.shape[0] == 1
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            dtype = torch.float16 if (use_fp16 and block.use_fp16) else torch.float32
            k = block.num_conv
            block_noise = noise[n_idx : n_idx + k] if noise is not None else ()
            x, img = block(x, img, ws[:, w_idx : w_idx + k + 1], dtype, noise_mode, block_noise, ref=ref)
            w_idx += k
            n_idx += k
        return img


class StyleGAN2Network(nn.Module):
    """Mapping + synthesis; `forward(z, c)` returns NCHW float32 images in about [-1, 1]."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        res = cfg.block_resolutions
        self.synthesis = SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels, cfg.synthesis, res)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws, cfg.mapping)

    def forward(self, z, c, psi=1.0, truncation_cutoff=None, noise_mode="const", noise=None, use_fp16=False):
        ws = self.mapping(z, c, psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode, noise, use_fp16)


def random_init(cfg: StyleGAN2Config, seed: int = 0) -> StyleGAN2Network:
    """A network with seeded random weights (for demos and tests; produces coloured noise).

    Biases and noise strengths are perturbed so every tensor affects the output, and `w_avg`
    is estimated from 1,000 mapping outputs so that truncation is meaningful.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = StyleGAN2Network(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, p in net.named_parameters():
            if ".torgb." in name and not name.endswith("affine.weight") and not name.endswith("affine.bias"):
                p.mul_(0.3)
        z = torch.randn(1000, cfg.z_dim, generator=g)
        c = torch.zeros(1000, cfg.c_dim)
        if cfg.c_dim:
            c[torch.arange(1000), torch.randint(cfg.c_dim, (1000,), generator=g)] = 1
        net.mapping.w_avg.copy_(net.mapping(z, c)[:, 0].mean(0))
    return net.eval().requires_grad_(False)

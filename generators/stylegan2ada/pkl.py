"""Safe reader for NVIDIA stylegan2-ada-pytorch network pickles.

Those pickles store every module as a call to `torch_utils.persistence.
_reconstruct_persistent_obj(meta)`, where `meta` carries the module's Python source
(`module_src`), its class name and its instance state. NVIDIA's loader `exec`s that source,
so loading a file means running its author's code. We do not: an allow-list unpickler maps
each permitted global to an inert stand-in, and anything else stops the load before it runs.
`module_src` is kept as an opaque string (hashed for provenance, never executed).
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
from collections import OrderedDict

import numpy as np
import torch

from synthgen.errors import DataError, UnsafePickleError

from .network import MappingConfig, StyleGAN2Config, SynthesisConfig


class PersistentRecord:
    """Inert stand-in for one persistent NVIDIA module: class name plus its state dict."""

    __slots__ = ("class_name", "state", "module_src_sha256", "version")

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name")
        self.state = meta.get("state") or {}
        self.version = meta.get("version")
        src = meta.get("module_src")
        self.module_src_sha256 = hashlib.sha256(src.encode()).hexdigest() if isinstance(src, str) else None

    def __repr__(self):
        return f"<PersistentRecord {self.class_name}>"

    def __getitem__(self, key):
        return self.state[key]

    def get(self, key, default=None):
        return self.state.get(key, default)

    @property
    def children(self) -> dict:
        return self.state.get("_modules") or {}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """All parameters and buffers of this record and its children, state-dict style."""
        out = {}
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None:
                    out[prefix + name] = t
        for name, child in self.children.items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


class _EasyDict(dict):
    """Plain dict standing in for `dnnlib.util.EasyDict`."""


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar in the pickle is not a plain numeric value")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(spec, align=False, copy=False):
    dt = np.dtype(spec, align, copy)
    if dt.hasobject:
        raise UnsafePickleError("numpy dtype 'object' in the pickle is refused")
    return dt


def _codecs_encode(text, encoding="latin1"):  # protocol-2 spelling of a bytes object
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode in the pickle is only allowed for latin1 bytes")
    return text.encode("latin1")


def _load_storage(blob: bytes):
    # A legacy torch.save stream of one storage; weights_only=True runs no pickle globals
    # outside torch's own allow-list.
    return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if isinstance(storage, torch.TypedStorage):
        flat = torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage)
    else:
        raise UnsafePickleError("tensor storage in the pickle is not a torch storage")
    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _codecs_encode,
}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global '{module}.{name}': it is not on synthgen's allow-list of "
                "StyleGAN2-ADA pickle contents, so the file was not loaded and nothing in it ran"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("pickle uses persistent ids (a torch.save file?); not a network pickle")


def read_pickle(path) -> dict:
    """Load a network pickle into plain data + PersistentRecords, executing nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if len(head) < 2 or head[0] != 0x80:
                raise DataError(f"{path}: not a pickle file (expected a StyleGAN2-ADA network .pkl)")
            f.seek(0)
            data = _AllowListUnpickler(f).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except DataError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise DataError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: pickle holds a {type(data).__name__}, expected a network snapshot dict")
    return data


def _f(x) -> float:
    return float(x)


def _wshape(rec: PersistentRecord) -> tuple:
    """Shape of a record's `weight` parameter (FC: [out, in]; conv: [out, in, k, k])."""
    return tuple((rec.state.get("_parameters") or {})["weight"].shape)


def config_from_record(g: PersistentRecord, where: str = "G_ema") -> StyleGAN2Config:
    """Read the generator's hyper-parameters from the record tree, checking what we support."""
    if g.class_name != "Generator":
        raise DataError(f"{where} is a {g.class_name!r}, expected a StyleGAN2-ADA 'Generator'")
    mapping, synthesis = g.children.get("mapping"), g.children.get("synthesis")
    if not isinstance(mapping, PersistentRecord) or not isinstance(synthesis, PersistentRecord):
        raise DataError(f"{where} has no mapping/synthesis sub-networks")
    if synthesis.class_name != "SynthesisNetwork" or "block_resolutions" not in synthesis.state:
        raise DataError(
            f"{where}: synthesis network {synthesis.class_name!r} is not StyleGAN2-ADA's "
            "(StyleGAN3 and other generators are not supported)"
        )
    z_dim, c_dim, w_dim = int(g["z_dim"]), int(g["c_dim"]), int(g["w_dim"])
    res, img_ch = int(g["img_resolution"]), int(g["img_channels"])

    layers = [mapping.children[f"fc{i}"] for i in range(int(mapping["num_layers"]))]
    embed = mapping.children.get("embed")
    hidden = layers[0]
    lr = _f(hidden["bias_gain"])
    mcfg = MappingConfig(
        num_layers=len(layers),
        embed_features=_wshape(embed)[0] if embed is not None else 0,
        layer_features=_wshape(hidden)[0] if len(layers) > 1 else None,
        activation=str(hidden["activation"]),
        lr_multiplier=lr,
        w_avg_beta=None if mapping.get("w_avg_beta") is None else _f(mapping["w_avg_beta"]),
    )

    channels, fp16, clamps, archs = {}, [], set(), set()
    for r in synthesis["block_resolutions"]:
        b = synthesis.children[f"b{r}"]
        archs.add(b["architecture"])
        channels[int(r)] = _wshape(b.children["conv1"])[0]
        if b["use_fp16"]:
            fp16.append(int(r))
        for name in ("conv0", "conv1", "torgb"):
            if name in b.children:
                clamps.add(b.children[name].get("conv_clamp"))
    unsupported = archs - {"skip"}
    if unsupported:
        raise DataError(
            f"{where}: synthesis architecture {sorted(unsupported)} is not supported "
            "(synthgen implements StyleGAN2-ADA's default 'skip' architecture)"
        )
    if len(clamps) != 1:
        raise DataError(f"{where}: mixed conv_clamp values {sorted(map(str, clamps))} are not supported")
    clamp = clamps.pop()
    conv1 = synthesis.children[f"b{synthesis['block_resolutions'][0]}"].children["conv1"]
    scfg = SynthesisConfig(
        channels=channels,
        fp16_resolutions=fp16,
        conv_clamp=None if clamp is None else _f(clamp),
        architecture="skip",
        use_noise=bool(conv1.get("use_noise", True)),
        resample_filter=[1.0, 3.0, 3.0, 1.0],  # informational: the stored 4x4 buffers are used
    )
    cfg = StyleGAN2Config(z_dim, c_dim, w_dim, res, img_ch, mcfg, scfg)
    _check_gains(cfg, mapping, synthesis, where)
    if int(g["num_ws"]) != cfg.num_ws:
        raise DataError(f"{where}: num_ws {g['num_ws']} differs from the {cfg.num_ws} this architecture reads")
    return cfg


def _check_gains(cfg: StyleGAN2Config, mapping, synthesis, where):
    """The runtime gains we derive must equal those stored in the file, else refuse."""
    checks = []
    for name, rec in mapping.children.items():
        lr = _f(rec["bias_gain"])
        checks.append((f"mapping.{name}.weight_gain", rec["weight_gain"], lr / math.sqrt(_wshape(rec)[1])))
    for r in synthesis["block_resolutions"]:
        b = synthesis.children[f"b{r}"]
        for lname, layer in b.children.items():
            if layer.class_name == "SynthesisLayer":
                checks.append((f"b{r}.{lname}.act_gain", layer["act_gain"], math.sqrt(2)))
                if layer.get("activation", "lrelu") != "lrelu" or int(layer.get("padding", 1)) != 1:
                    raise DataError(f"{where}: b{r}.{lname} uses an unsupported activation/kernel")
            elif layer.class_name == "ToRGBLayer":
                checks.append((f"b{r}.{lname}.weight_gain", layer["weight_gain"], 1 / math.sqrt(_wshape(layer)[1])))
            for sub in layer.children.values():
                checks.append(
                    (f"b{r}.{lname}.affine.weight_gain", sub["weight_gain"], 1 / math.sqrt(_wshape(sub)[1]))
                )
    for what, stored, derived in checks:
        if not math.isclose(_f(stored), derived, rel_tol=1e-9):
            raise DataError(f"{where}: {what} is {_f(stored)} in the file, expected {derived}; unsupported variant")


def load_pickle(path, key: str = "G_ema"):
    """Return (config, state_dict, info) for the generator stored under `key` (default G_ema)."""
    data = read_pickle(path)
    if key not in data:
        found = ", ".join(sorted(map(str, data.keys()))) or "none"
        raise DataError(f"{path}: no '{key}' network in the snapshot (keys found: {found})")
    g = data[key]
    if not isinstance(g, PersistentRecord):
        raise DataError(f"{path}: '{key}' is a {type(g).__name__}, not a persistent network object")
    cfg = config_from_record(g, f"{path}: {key}")
    state = g.tensors()
    info = {"source_format": "stylegan2-ada-pkl", "snapshot_keys": sorted(map(str, data.keys())),
            "module_src_sha256": g.module_src_sha256}
    return cfg, state, info

"""Safe reader for NVIDIA stylegan2-ada-pytorch network pickles.

Those pickles store every module as a call to `torch_utils.persistence.
_reconstruct_persistent_obj(meta)`, where `meta` carries the module's Python source
(`module_src`), its class name and its instance state. NVIDIA's loader `exec`s that source,
so loading a file means running its author's code. We do not: `synthgen.safepickle.PickleVM`
interprets the opcodes itself and builds only plain data; the few globals such a file uses map
to functions here that build inert records (`PersistentRecord`, a dtype record, tensors from
storages parsed byte by byte, never through `torch.load`), each checking its arguments. Any
other global, and BUILD/SETITEM/APPEND on anything but our own records and containers, stops
the load before anything is built from it. `module_src` is kept as an opaque string (hashed
for provenance, never executed). Tensor data may not exceed what the file holds: a tensor
must fit inside its storage, a storage must be declared and fully present, views are never
expanded, and the total allocated is bounded by the file size.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections import OrderedDict

import numpy as np
import torch

from synthgen.errors import DataError, UnsafePickleError, UsageError

from .bounds import check_config, check_state
from .network import MappingConfig, StyleGAN2Config, SynthesisConfig
from .pickle_values import (_Budget, _charged, _codecs_encode, _DtypeRecord, _make_tensor_builders, _numpy_scalar,
                            _ordered_dict, _set_of)
from synthgen.safepickle import escape, show
from synthgen.safepickle import PickleVM


class PersistentRecord:
    """Inert stand-in for one persistent NVIDIA module: class name plus its state dict."""

    __slots__ = ("class_name", "state", "module_src_sha256", "version")

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name")
        self.state = meta.get("state") or {}
        self.version = meta.get("version")
        src = meta.get("module_src")
        self.module_src_sha256 = (hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
                                  if isinstance(src, str) else None)

    def _children(self):  # for the reader's graph check (cycles, depth)
        return (self.state,)

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
        """All parameters and buffers of this record and its children, state-dict style. Each
        sub-module is visited once: a record reached twice (a shared sub-module, which no
        StyleGAN2-ADA network has) is refused, so a crafted DAG cannot make the walk exponential."""
        out, seen, todo = {}, set(), [(prefix, self)]
        while todo:
            pre, rec = todo.pop()
            if id(rec) in seen:
                raise DataError(f"sub-module {escape(pre.rstrip('.'), 80)} is shared with another module; "
                                "not a StyleGAN2-ADA network")
            seen.add(id(rec))
            for group in ("_parameters", "_buffers"):
                for name, t in (rec.state.get(group) or {}).items():
                    if t is not None:
                        out[pre + name] = t
            for name, child in reversed(list(rec.children.items())):
                if isinstance(child, PersistentRecord):
                    todo.append((f"{pre}{name}.", child))
        return out


class _EasyDict(dict):
    """Plain dict standing in for `dnnlib.util.EasyDict`."""


def _build(obj, state) -> None:
    """BUILD is allowed on two records only: a numpy dtype (its byte order) and an empty EasyDict state."""
    if isinstance(obj, _DtypeRecord):
        obj.set_state(state)
    elif type(obj) is _EasyDict and state in ({}, None):
        pass
    else:
        raise UnsafePickleError(f"BUILD on a {type(obj).__name__} is not allowed; synthgen's pickle reader builds "
                                "only plain data, so the file was not loaded and nothing in it ran")


def _persistent_record(meta):
    if not isinstance(meta, dict) or not isinstance(meta.get("state", {}), dict):
        raise UnsafePickleError("a persistent object in the pickle without a meta dict/state dict is refused")
    return PersistentRecord(meta)


def read_pickle(path) -> dict:
    """Load a network pickle into plain data + PersistentRecords, executing nothing."""
    try:
        with open(path, "rb") as f:  # one copy, into a buffer the tensors can view (see _parse_storage)
            size = os.fstat(f.fileno()).st_size
            data = np.empty(size, np.uint8)  # not a bytearray: that would first zero 340 MB (~0.3 s)
            got = f.readinto(data) if size else 0
            if got != size or f.read(1):
                raise DataError(f"{path}: changed while it was read; try again")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; expected a StyleGAN2-ADA .pkl or a synthgen checkpoint (`synthgen convert` writes one); check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a StyleGAN2-ADA network .pkl") from None
    if len(data) < 2 or data[0] != 0x80:
        raise DataError(f"{path}: not a pickle file (expected a StyleGAN2-ADA network .pkl)")
    budget = _Budget(len(data))
    load_from_bytes, rebuild_tensor_v2, rebuild_parameter = _make_tensor_builders(str(path), budget)
    scalar = _numpy_scalar
    globals_ = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
        ("collections", "OrderedDict"): _charged(_ordered_dict, budget, str(path), per_item=64),
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): load_from_bytes,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy", "dtype"): _DtypeRecord,
        ("builtins", "set"): _charged(_set_of(set), budget, str(path), per_item=64),
        ("builtins", "frozenset"): _charged(_set_of(frozenset), budget, str(path), per_item=64),
        ("__builtin__", "set"): _charged(_set_of(set), budget, str(path), per_item=64),
        ("_codecs", "encode"): _charged(_codecs_encode, budget, str(path)),
    }
    newobj = {("dnnlib.util", "EasyDict"): _EasyDict, ("dnnlib", "EasyDict"): _EasyDict,
              ("collections", "OrderedDict"): OrderedDict}
    # storages (BINBYTES of torch.save streams) stay views of `data`: never copied, each still charged
    vm = PickleVM(data, str(path), globals_, newobj=newobj, build=_build, view_bytes_from=1 << 12)
    try:
        obj, _ = vm.run(0)
    except UnsafePickleError as e:
        msg = str(e)
        raise UnsafePickleError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except DataError:
        raise
    except (TypeError, ValueError, OverflowError, struct.error, RuntimeError) as e:
        raise DataError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {escape(e, 160)})") from None
    except MemoryError:
        raise DataError(f"{path}: ran out of memory while reading it; not a loadable network snapshot") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: pickle holds a {type(obj).__name__}, expected a network snapshot dict")
    return obj


def _f(x) -> float:
    """A number stored in the file (Python or numpy scalar); strings and tensors are refused."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(float(x)):
        raise DataError(f"expected a finite number, found {show(x)}")
    return float(x)


def _i(x) -> int:
    """An integer stored in the file (no strings like ' 9\n', no bools, no floats)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise DataError(f"expected an integer, found {show(x)}")
    return int(x)


def _wshape(rec: PersistentRecord) -> tuple:
    """Shape of a record's `weight` parameter (FC: [out, in]; conv: [out, in, k, k])."""
    w = (rec.state.get("_parameters") or {}).get("weight")
    if not isinstance(w, torch.Tensor) or w.ndim < 2 or 0 in w.shape:
        raise DataError(f"{rec.class_name and escape(rec.class_name)} has no usable weight tensor")
    return tuple(w.shape)


def _record(parent: PersistentRecord, name: str, class_name: str, where: str) -> PersistentRecord:
    child = parent.children.get(name)
    if not isinstance(child, PersistentRecord) or child.class_name != class_name:
        found = show(child.class_name) if isinstance(child, PersistentRecord) else type(child).__name__
        raise DataError(f"{where}: {name} is {found}, expected a {class_name}")
    return child


def config_from_record(g: PersistentRecord, where: str = "G_ema") -> StyleGAN2Config:
    """Read the generator's hyper-parameters from the record tree, checking what we support.

    Every sub-module must be one our network implements, with the activation and gains our
    network will use: a file whose stored settings we would silently ignore is refused."""
    if g.class_name != "Generator":
        raise DataError(f"{where} is a {show(g.class_name)}, expected a StyleGAN2-ADA 'Generator'")
    mapping, synthesis = g.children.get("mapping"), g.children.get("synthesis")
    if not isinstance(mapping, PersistentRecord) or not isinstance(synthesis, PersistentRecord):
        raise DataError(f"{where} has no mapping/synthesis sub-networks")
    if synthesis.class_name != "SynthesisNetwork" or "block_resolutions" not in synthesis.state:
        raise DataError(
            f"{where}: synthesis network {show(synthesis.class_name)} is not StyleGAN2-ADA's "
            "(StyleGAN3 and other generators are not supported)"
        )
    z_dim, c_dim, w_dim = _i(g["z_dim"]), _i(g["c_dim"]), _i(g["w_dim"])
    res, img_ch = _i(g["img_resolution"]), _i(g["img_channels"])

    n_layers = _i(mapping["num_layers"])
    if not 1 <= n_layers <= 64:
        raise DataError(f"{where}: mapping num_layers is {n_layers}, expected 1-64")
    layers = [_record(mapping, f"fc{i}", "FullyConnectedLayer", f"{where}: mapping") for i in range(n_layers)]
    expected = {f"fc{i}" for i in range(n_layers)} | ({"embed"} if c_dim else set())
    extra = sorted(map(escape, set(mapping.children) - expected))
    if extra:
        raise DataError(f"{where}: mapping has sub-modules {', '.join(extra)} that StyleGAN2-ADA's mapping network "
                        "does not")
    embed = _record(mapping, "embed", "FullyConnectedLayer", f"{where}: mapping") if c_dim else None
    hidden = layers[0]
    lr = _f(hidden["bias_gain"])
    activation = hidden["activation"]
    for i, layer in enumerate(layers):
        if layer["activation"] != activation or _f(layer["bias_gain"]) != lr:
            raise DataError(f"{where}: mapping fc{i} has activation {show(layer['activation'])} / lr "
                            f"{show(layer['bias_gain'])}, fc0 has {show(activation)} / {lr}; mixed settings are "
                            "not supported")
    if embed is not None and (embed["activation"] != "linear" or _f(embed["bias_gain"]) != 1.0):
        raise DataError(f"{where}: mapping embed has activation {show(embed['activation'])} / lr "
                        f"{show(embed['bias_gain'])}, expected linear / 1 (StyleGAN2-ADA's label embedding)")
    if not isinstance(activation, str):
        raise DataError(f"{where}: mapping activation is {show(activation)}, expected a name like 'lrelu'")
    mcfg = MappingConfig(
        num_layers=n_layers,
        embed_features=_wshape(embed)[0] if embed is not None else 0,
        layer_features=_wshape(hidden)[0] if n_layers > 1 else None,
        activation=activation,
        lr_multiplier=lr,
        w_avg_beta=None if mapping.get("w_avg_beta") is None else _f(mapping["w_avg_beta"]),
    )

    resolutions = synthesis["block_resolutions"]
    if not isinstance(resolutions, list) or len(resolutions) > 16:
        raise DataError(f"{where}: block_resolutions is {show(resolutions)}, expected a list of at most 16 sizes")
    channels, fp16, clamps, archs = {}, [], set(), set()
    for r in map(_i, resolutions):
        b = _record(synthesis, f"b{r}", "SynthesisBlock", f"{where}: synthesis")
        arch = b["architecture"]
        archs.add(arch if isinstance(arch, str) else show(arch))
        names = {"conv1", "torgb"} | ({"conv0"} if r != resolutions[0] else set())
        if set(b.children) != names:
            raise DataError(f"{where}: block b{r} has sub-modules {', '.join(sorted(map(escape, b.children)))}, "
                            f"expected {', '.join(sorted(names))}")
        channels[r] = _wshape(_record(b, "conv1", "SynthesisLayer", f"{where}: b{r}"))[0]
        use_fp16 = b["use_fp16"]
        if not isinstance(use_fp16, bool):
            raise DataError(f"{where}: b{r} use_fp16 is {show(use_fp16)}, expected true or false")
        if use_fp16:
            fp16.append(r)
        for name in names:
            clamp = b.children[name].get("conv_clamp")
            clamps.add(None if clamp is None else _f(clamp))
    unsupported = archs - {"skip"}
    if unsupported:
        raise DataError(
            f"{where}: synthesis architecture {sorted(unsupported)} is not supported "
            "(synthgen implements StyleGAN2-ADA's default 'skip' architecture)"
        )
    if len(clamps) != 1:
        raise DataError(f"{where}: mixed conv_clamp values {sorted(map(str, clamps))} are not supported")
    clamp = clamps.pop()
    conv1 = synthesis.children[f"b{_i(resolutions[0])}"].children["conv1"]
    use_noise = conv1.get("use_noise", True)
    if not isinstance(use_noise, bool):
        raise DataError(f"{where}: use_noise is {show(use_noise)}, expected true or false")
    scfg = SynthesisConfig(
        channels=channels,
        fp16_resolutions=fp16,
        conv_clamp=clamp,
        architecture="skip",
        use_noise=use_noise,
        resample_filter=[1.0, 3.0, 3.0, 1.0],  # informational: the stored 4x4 buffers are used
    )
    cfg = StyleGAN2Config(z_dim, c_dim, w_dim, res, img_ch, mcfg, scfg)
    check_config(cfg, where)  # bounds first: the checks below compute with these numbers
    _check_gains(cfg, mapping, synthesis, where)
    if _i(g["num_ws"]) != cfg.num_ws:
        raise DataError(f"{where}: num_ws {show(g['num_ws'])} differs from the {cfg.num_ws} this architecture reads")
    return cfg


def _check_gains(cfg: StyleGAN2Config, mapping, synthesis, where):
    """The runtime gains we derive must equal those stored in the file, else refuse."""
    checks = []
    for name, rec in mapping.children.items():
        lr = _f(rec["bias_gain"])
        checks.append((f"mapping.{name}.weight_gain", rec["weight_gain"], lr / math.sqrt(_wshape(rec)[1])))
    for r in cfg.block_resolutions:
        b = synthesis.children[f"b{r}"]
        for lname, layer in b.children.items():
            if layer.class_name == "SynthesisLayer":
                checks.append((f"b{r}.{lname}.act_gain", layer["act_gain"], math.sqrt(2)))
                if layer.get("activation", "lrelu") != "lrelu" or layer.get("padding", 1) != 1:
                    raise DataError(f"{where}: b{r}.{lname} uses an unsupported activation/kernel")
            elif layer.class_name == "ToRGBLayer":
                checks.append((f"b{r}.{lname}.weight_gain", layer["weight_gain"], 1 / math.sqrt(_wshape(layer)[1])))
            else:
                raise DataError(f"{where}: b{r}.{escape(lname)} is a {show(layer.class_name)}, expected a "
                                "SynthesisLayer or ToRGBLayer")
            subs = layer.children
            if set(subs) != {"affine"} or not isinstance(subs["affine"], PersistentRecord) \
                    or subs["affine"].class_name != "FullyConnectedLayer":
                raise DataError(f"{where}: b{r}.{lname} should hold exactly one 'affine' FullyConnectedLayer")
            aff = subs["affine"]
            if aff["activation"] != "linear" or _f(aff["bias_gain"]) != 1.0:
                raise DataError(f"{where}: b{r}.{lname}.affine has activation {show(aff['activation'])} / lr "
                                f"{show(aff['bias_gain'])}, expected linear / 1")
            checks.append((f"b{r}.{lname}.affine.weight_gain", aff["weight_gain"], 1 / math.sqrt(_wshape(aff)[1])))
    for what, stored, derived in checks:
        if not math.isclose(_f(stored), derived, rel_tol=1e-9):
            raise DataError(f"{where}: {escape(what)} is {_f(stored)} in the file, expected {derived}; unsupported variant")


def load_pickle(path, key: str = "G_ema"):
    """Return (config, state_dict, info) for the generator stored under `key` (default G_ema)."""
    data = read_pickle(path)
    if key not in data:
        found = ", ".join(sorted(escape(k, 40) for k in data)[:20]) or "none"
        raise DataError(f"{path}: no '{key}' network in the snapshot (keys found: {found})")
    g = data[key]
    if not isinstance(g, PersistentRecord):
        raise DataError(f"{path}: '{key}' is a {type(g).__name__}, not a persistent network object")
    where = f"{path}: {key}"
    try:
        cfg = config_from_record(g, where)
        state = g.tensors()
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, ZeroDivisionError,
            RuntimeError) as e:  # RuntimeError: e.g. the truth value of a tensor where a flag belongs
        raise DataError(f"{where}: malformed network record ({type(e).__name__}: {escape(e, 120)}); the file is "
                        "damaged or not a StyleGAN2-ADA generator") from None
    check_state(cfg, state, where)
    info = {"source_format": "stylegan2-ada-pkl", "snapshot_keys": sorted(escape(k, 80) for k in data),
            "module_src_sha256": g.module_src_sha256}
    return cfg, state, info

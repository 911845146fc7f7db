"""The allow-list unpickler: reads every legitimate spelling, refuses everything else, runs nothing."""

import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from conftest import MICRO
from synthgen.errors import DataError, UnsafePickleError, UsageError
from synthgen.generators import load_generator
from synthgen.generators.stylegan2ada.pkl import PersistentRecord, _EasyDict, load_pickle, read_pickle


# -- malicious pickles ---------------------------------------------------------------------------

class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize(
    "func,args,name",
    [
        (os.system, "touch {marker}", "system"),
        (eval, "open({marker!r}, 'w').write('x')", "builtins.eval"),
        (subprocess.Popen, ["touch", "{marker}"], "subprocess.Popen"),
    ],
)
def test_malicious_pickle_refused_and_nothing_runs(tmp_path, func, args, name):
    marker = tmp_path / "pwned"
    arg = [a.format(marker=str(marker)) for a in args] if isinstance(args, list) else args.format(marker=str(marker))
    path = tmp_path / "evil.pkl"
    # Looks like a snapshot; the payload sits inside G_ema's state.
    path.write_bytes(pickle.dumps({"G_ema": _Evil(func, arg)}, protocol=4))
    with pytest.raises(UnsafePickleError, match=rf"refused global '[\w.]*{name}'"):
        load_generator(path)
    assert not marker.exists()


def test_malicious_inside_real_snapshot_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps([_Evil(os.system, f"touch {marker}")], protocol=2)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        read_pickle(path)
    assert not marker.exists()


# -- legitimate spellings: re-pickle the fixture's objects at protocols 2 and 5 ----------------

def _fake_modules(monkeypatch):
    """Importable stand-ins for NVIDIA's globals, so `pickle.dumps` writes the real names."""
    tu = types.ModuleType("torch_utils")
    tp = types.ModuleType("torch_utils.persistence")
    dn = types.ModuleType("dnnlib")
    du = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called: the loader maps this name to an inert record")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    tp._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    du.EasyDict = EasyDict
    for name, mod in [("torch_utils", tu), ("torch_utils.persistence", tp), ("dnnlib", dn), ("dnnlib.util", du)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return _reconstruct_persistent_obj, EasyDict


def _to_writable(obj, recon, EasyDict):
    class Rec:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (recon, (self.meta,))

    def conv(o):
        if isinstance(o, PersistentRecord):
            return Rec({"type": "class", "version": 6, "module_src": "# opaque", "class_name": o.class_name,
                        "state": conv(o.state)})
        if isinstance(o, _EasyDict):
            return EasyDict({k: conv(v) for k, v in o.items()})
        if isinstance(o, dict):
            return type(o)((k, conv(v)) for k, v in o.items())
        if isinstance(o, (list, tuple)):
            return type(o)(conv(v) for v in o)
        if isinstance(o, torch.Tensor):
            return torch.nn.Parameter(o, requires_grad=False)
        return o

    return conv(obj)


@pytest.mark.parametrize("protocol", [2, 5])
def test_repickled_snapshot_loads_identically(tmp_path, monkeypatch, protocol):
    data = read_pickle(MICRO / "network-scrubbed-p4.pkl")
    recon, EasyDict = _fake_modules(monkeypatch)
    # Fork-style snapshot: no D / augment_pipe, an extra key.
    snap = {"G_ema": _to_writable(data["G_ema"], recon, EasyDict), "fork_extra": {"note": "hi"}}
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(snap, protocol=protocol))
    assert path.read_bytes()[:2] == bytes([0x80, protocol])
    if protocol == 2:  # bytes objects are spelt `_codecs.encode(str, 'latin1')` at protocol 2
        assert b"_codecs" in path.read_bytes()
    cfg, state, info = load_pickle(path)
    ref = np.load(MICRO / "g_ema_state.npz")
    assert sorted(state) == sorted(ref.files)
    for k in ref.files:
        np.testing.assert_array_equal(state[k].numpy(), ref[k])
    assert info["snapshot_keys"] == ["G_ema", "fork_extra"]


def test_uses_g_ema_not_g(tmp_path):
    data = read_pickle(MICRO / "network-scrubbed-p4.pkl")
    g = data["G"].tensors()
    ge = data["G_ema"].tensors()
    assert any(not torch.equal(g[k], ge[k]) for k in ge)
    _, state, _ = load_pickle(MICRO / "network-scrubbed-p4.pkl")
    assert all(torch.equal(state[k], ge[k]) for k in ge)


# -- bad files -----------------------------------------------------------------------------------

def test_not_a_pickle(tmp_path):
    p = tmp_path / "net.pkl"
    p.write_text("hello")
    with pytest.raises(DataError, match="net.pkl"):
        load_generator(p)


def test_truncated_pickle(tmp_path):
    p = tmp_path / "cut.pkl"
    p.write_bytes((MICRO / "network-scrubbed-p4.pkl").read_bytes()[:50000])
    with pytest.raises(DataError, match="cut.pkl: truncated or corrupt"):
        load_generator(p)


def test_pickle_of_something_else(tmp_path):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a network snapshot dict"):
        load_generator(p)
    p.write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(DataError, match="no 'G_ema' network.*keys found: G"):
        load_generator(p)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="no such file; expected a StyleGAN2-ADA .pkl"):
        load_generator(tmp_path / "nope.pkl")


def _patched_snapshot(tmp_path, monkeypatch, mutate):
    data = read_pickle(MICRO / "network-scrubbed-p4.pkl")
    mutate(data["G_ema"])
    recon, EasyDict = _fake_modules(monkeypatch)
    p = tmp_path / "variant.pkl"
    p.write_bytes(pickle.dumps({"G_ema": _to_writable(data["G_ema"], recon, EasyDict)}, protocol=4))
    return p


def test_resnet_architecture_refused(tmp_path, monkeypatch):
    def mutate(g):
        g.children["synthesis"].children["b8"].state["architecture"] = "resnet"

    p = _patched_snapshot(tmp_path, monkeypatch, mutate)
    with pytest.raises(DataError, match=r"architecture \['resnet'\] is not supported"):
        load_generator(p)


def test_stylegan3_refused(tmp_path, monkeypatch):
    def mutate(g):
        syn = g.children["synthesis"]
        del syn.state["block_resolutions"]
        syn.state["layer_names"] = ["L0_36_512"]

    p = _patched_snapshot(tmp_path, monkeypatch, mutate)
    with pytest.raises(DataError, match="StyleGAN3"):
        load_generator(p)


def test_storages_are_views_of_the_file_buffer_and_still_charged(monkeypatch):
    """The reader copies the file once: each storage's tensor views the file's buffer (no per-storage
    copies), and every storage is still charged to the load's budget."""
    from synthgen.generators.stylegan2ada import pickle_values

    charged, views = [], []
    real_charge, real_frombuffer = pickle_values._Budget.charge, torch.frombuffer

    def charge(self, n, where):
        charged.append(n)
        return real_charge(self, n, where)

    def frombuffer(buf, **kw):
        t = real_frombuffer(buf, **kw)
        if t.numel() * t.element_size() > 4096:  # smaller storages are copied (fewer than 4 KiB in the pickle)
            views.append((type(buf).__name__, "offset" in kw))
        return t

    monkeypatch.setattr(pickle_values._Budget, "charge", charge)
    monkeypatch.setattr(pickle_values.torch, "frombuffer", frombuffer)
    snap = read_pickle(MICRO / "network-scrubbed-p4.pkl")
    state = snap["G_ema"].tensors()
    assert views and set(views) == {("ndarray", True)}  # the file's buffer at an offset, never a copy
    assert sum(charged) >= sum(t.numel() * t.element_size() for t in state.values())


def test_contiguous_strides_match_torch():
    from synthgen.generators.stylegan2ada.pickle_values import _contiguous_strides

    for size in [(), (3,), (2, 3, 4), (0, 3), (3, 0, 2), (1, 1, 5), (5, 1)]:
        assert _contiguous_strides(size) == tuple(torch.empty(size).stride())


def test_uninitialized_networks_leave_random_init_alone():
    from synthgen.generators.stylegan2ada.network import StyleGAN2Config, random_init, uninitialized

    cfg = StyleGAN2Config.from_hyperparams(z_dim=8, c_dim=2, w_dim=8, img_resolution=8, mapping_layers=1,
                                           channel_base=64, channel_max=16)
    a = random_init(cfg, 3).state_dict()
    with uninitialized():
        pass
    b = random_init(cfg, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # an interpreter start (~3 s)
def test_loading_a_pickle_imports_no_compiler():
    """A meta-device shape check imported torch._dynamo and sympy (~2 s of a 4 s load)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path[:0] = [{os.path.dirname(here)!r}, {here!r}]; import conftest; "  # this checkout
            "import torch; from synthgen.generators import load_generator; "
            f"load_generator({str(MICRO / 'network-scrubbed-p4.pkl')!r}); "
            "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "False"], r.stderr[-2000:]

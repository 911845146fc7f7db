"""Hostile network files: each attack is refused with one line, runs nothing and stays small.

The pickles are written opcode by opcode (a tiny assembler below), the way an attacker would,
so they contain exactly the structure described in each test and nothing pickle.dumps adds.
"""

import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from conftest import MICRO  # tests/conftest.py
from hostile_util import assert_one_line_error, run_limited
from synthgen.errors import DataError, UnsafePickleError
from synthgen.generators import load_generator
from synthgen.generators.stylegan2ada import StyleGAN2Config, save_checkpoint
from synthgen.generators.stylegan2ada.pkl import load_pickle, read_pickle


# -- a pickle assembler --------------------------------------------------------------------------

def s(text: str) -> bytes:  # SHORT_BINUNICODE / BINUNICODE
    b = text.encode()
    return (b"\x8c" + bytes([len(b)]) + b) if len(b) < 256 else (b"X" + struct.pack("<I", len(b)) + b)


def u(text: str) -> bytes:  # BINUNICODE: what torch's legacy writer uses (torch.load reads only that)
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def by(data: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(data)) + data


def i(n: int) -> bytes:  # BININT / LONG1
    return b"J" + struct.pack("<i", n) if -(2**31) <= n < 2**31 else b"\x8a" + bytes([8]) + struct.pack("<q", n)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + tup(*args) + b"R"


def pkl(body: bytes, proto: int = 4) -> bytes:
    return b"\x80" + bytes([proto]) + body + b"."


def snapshot(g_ema: bytes) -> bytes:
    return pkl(b"}" + s("G_ema") + g_ema + b"s")


def storage_blob(values: np.ndarray, declared=None, keys=None, count=None) -> bytes:
    """A legacy torch.save stream of one float32 storage, as in NVIDIA's pickles."""
    n = values.size if declared is None else declared
    keys = ["1234"] if keys is None else keys
    out = pkl(b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little"), 2)
    out += pkl(b"M" + struct.pack("<H", 1001), 2)
    out += pkl(b"}" + u("little_endian") + b"\x88" + b"s", 2)
    out += pkl(tup(u("storage"), glob("torch", "FloatStorage"), u("1234"), u("cpu"), i(n), b"N") + b"Q", 2)
    out += pkl(b"]" + b"".join(u(k) + b"a" for k in keys), 2)
    out += struct.pack("<q", values.size if count is None else count) + values.astype("<f4").tobytes()
    return out


def tensor(blob: bytes, size, stride, offset=0) -> bytes:
    return call(glob("torch._utils", "_rebuild_tensor_v2"),
                call(glob("torch.storage", "_load_from_bytes"), by(blob)), i(offset),
                tup(*map(i, size)), tup(*map(i, stride)), b"\x89", call(glob("collections", "OrderedDict")))


def write(tmp_path, data: bytes, name="evil.pkl"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- the storage parser reads the real fixture's blobs and our assembled ones alike --------------

def test_assembled_storage_is_read_like_torch(tmp_path):
    vals = np.arange(6, dtype=np.float32)
    blob = storage_blob(vals)
    assert torch.load(io.BytesIO(blob), weights_only=True).tolist() == vals.tolist()  # torch agrees it is real
    data = read_pickle(write(tmp_path, snapshot(tensor(blob, (2, 3), (3, 1)))))
    assert data["G_ema"].tolist() == [[0, 1, 2], [3, 4, 5]]


# -- memory corruption through numpy -----------------------------------------------------------

def test_numpy_dtype_with_fields_via_build_is_refused(tmp_path):
    # np.dtype('f8') then BUILD with a structured state: a field at offset 2**40
    state = tup(i(3), s("|"), b"N", tup(s("a")), b"}" + s("a") + tup(call(glob("numpy", "dtype"), s("f8"), b"\x89", b"\x88"), i(2**40)) + b"s",
                i(8), i(1), i(16))
    body = call(glob("numpy._core.multiarray", "scalar"), call(glob("numpy", "dtype"), s("f8"), b"\x89", b"\x88") + state + b"b",
                by(b"\0" * 8))
    with pytest.raises(UnsafePickleError, match="numpy dtype state .* refused"):
        read_pickle(write(tmp_path, snapshot(body)))


@pytest.mark.parametrize("spec", ["V8", "O", "f8,i4", "(2,)f4", "M8[s]", "U4"])
def test_numpy_dtype_other_than_plain_numbers_refused(tmp_path, spec):
    body = call(glob("numpy", "dtype"), s(spec), b"\x89", b"\x88")
    with pytest.raises(UnsafePickleError, match="numpy dtype .* refused"):
        read_pickle(write(tmp_path, snapshot(body)))


def test_scalar_over_bytearray_and_setitem_on_scalar_refused(tmp_path):
    dt = call(glob("numpy", "dtype"), s("f8"), b"\x89", b"\x88")
    bytearray8 = b"\x96" + struct.pack("<Q", 8) + b"\0" * 8
    with pytest.raises(UnsafePickleError, match="opcode 0x96"):
        read_pickle(write(tmp_path, snapshot(call(glob("numpy._core.multiarray", "scalar"), dt, bytearray8))))
    scalar = call(glob("numpy._core.multiarray", "scalar"), dt, by(b"\0" * 8))
    with pytest.raises(UnsafePickleError, match="SETITEM on a float64 is not allowed"):
        read_pickle(write(tmp_path, snapshot(scalar + i(0) + i(65) + b"s")))
    with pytest.raises(UnsafePickleError, match="numpy scalar of 4 bytes"):
        read_pickle(write(tmp_path, snapshot(call(glob("numpy._core.multiarray", "scalar"), dt, by(b"\0" * 4)))))


@pytest.mark.parametrize("target,op,name", [
    (b"]", b"N" + b"}" + b"b", "BUILD"),  # BUILD on a list
    (b"}", b"N" + b"a", "APPEND"),  # APPEND on a dict
    (s("text"), b"N" + b"N" + b"s", "SETITEM"),  # SETITEM on a str
])
def test_mutating_opcodes_only_act_on_plain_containers(tmp_path, target, op, name):
    with pytest.raises(UnsafePickleError, match=f"{name} on a"):
        read_pickle(write(tmp_path, snapshot(target + op)))


def test_build_on_a_tensor_is_refused(tmp_path):
    t = tensor(storage_blob(np.zeros(4, np.float32)), (4,), (1,))
    with pytest.raises(UnsafePickleError, match="BUILD on a Tensor"):
        read_pickle(write(tmp_path, snapshot(t + tup(i(1 << 30)) + b"b")))


# -- memory bombs -------------------------------------------------------------------------------

def test_stride_zero_tensor_is_not_expanded(tmp_path):
    p = write(tmp_path, snapshot(tensor(storage_blob(np.ones(1, np.float32)), (1 << 28,), (0,))))
    assert p.stat().st_size < 600
    with pytest.raises(DataError, match="would expand a storage of 1 elements"):
        read_pickle(p)


def test_tensor_past_its_storage_is_refused(tmp_path):
    p = write(tmp_path, snapshot(tensor(storage_blob(np.ones(4, np.float32)), (2, 3), (3, 1))))
    with pytest.raises(DataError, match="reaches past its storage"):
        read_pickle(p)


def test_shared_storage_referenced_many_times_hits_the_budget(tmp_path):
    # one 256 KiB storage, then 2,000 non-contiguous views of it (each would clone 128 KiB)
    blob = storage_blob(np.zeros(1 << 16, np.float32))
    stor = call(glob("torch.storage", "_load_from_bytes"), by(blob)) + b"\x94"  # memo 0
    view = call(glob("torch._utils", "_rebuild_tensor_v2"), b"h\x00", i(0), tup(i(1 << 15)), tup(i(2)), b"\x89", b"N")
    body = b"]" + stor + b"0" + b"(" + view * 2000 + b"e"
    with pytest.raises(DataError, match="more memory than the file holds"):
        read_pickle(write(tmp_path, snapshot(body)))


def test_storage_missing_from_key_list_or_short_is_refused(tmp_path):
    vals = np.ones(4, np.float32)
    with pytest.raises(DataError, match="declared and listed once"):
        read_pickle(write(tmp_path, snapshot(tensor(storage_blob(vals, keys=[]), (4,), (1,)))))
    short = storage_blob(vals)[:-4]  # last element missing: torch would hand back heap bytes
    with pytest.raises(DataError, match="declares 4 elements but holds"):
        read_pickle(write(tmp_path, snapshot(tensor(short, (4,), (1,)))))
    with pytest.raises(DataError, match="declares 1000 elements"):
        read_pickle(write(tmp_path, snapshot(tensor(storage_blob(vals, declared=1000, count=1000), (4,), (1,)))))


def test_huge_memo_index_costs_nothing(tmp_path):
    p = write(tmp_path, b"\x80\x04Nr\x00\x00\x00\x08.")  # LONG_BINPUT 2**27 (a list memo: 2 GiB)
    assert p.stat().st_size == 9
    with pytest.raises(DataError, match="holds a NoneType, expected a network snapshot dict"):
        read_pickle(p)


@pytest.mark.parametrize("n", [1 << 40, 1 << 62])
def test_declared_lengths_beyond_the_file_are_refused(tmp_path, n):
    p = write(tmp_path, b"\x80\x04\x8e" + struct.pack("<Q", n) + b"xx.")  # BINBYTES8
    with pytest.raises(DataError, match="truncated or corrupt pickle"):
        read_pickle(p)


# -- recursion and cycles -------------------------------------------------------------------------

def _record(state: bytes) -> bytes:
    meta = b"}" + s("class_name") + s("Generator") + b"s" + s("state") + state + b"s"
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


def test_deep_record_chain_is_refused_without_recursion(tmp_path):
    inner = b"}"
    for _ in range(3000):
        inner = _record(b"}" + s("_modules") + b"}" + s("x") + inner + b"s" + b"s")
    with pytest.raises(DataError, match="nested more than 64 deep"):
        load_pickle(write(tmp_path, snapshot(inner)))


def test_deep_tuples_and_cycles_are_refused(tmp_path):
    with pytest.raises(DataError, match="nested more than 64 deep"):
        read_pickle(write(tmp_path, snapshot(b"N" + b"\x85" * 100_000)))
    cycle = b"]\x94" + b"h\x00" + b"a"  # a list appended to itself
    with pytest.raises(DataError, match="cycle"):
        read_pickle(write(tmp_path, snapshot(cycle)))


def test_shared_tuples_cannot_make_hashing_or_messages_exponential(tmp_path):
    # (t, t) nested 50 deep: 110 bytes, 2**50 leaves if hashed or printed
    deep = b"\x8c\x01a\x85" + b"2\x86" * 50
    with pytest.raises(UnsafePickleError, match="dict key or set item of type tuple"):
        read_pickle(write(tmp_path, pkl(b"}" + deep + b"Ns")))  # as a dict key
    with pytest.raises(UnsafePickleError, match="numpy dtype <tuple>"):
        read_pickle(write(tmp_path, snapshot(call(glob("numpy", "dtype"), deep, b"\x89", b"\x88"))))
    with pytest.raises(DataError, match="G_ema is a <tuple>"):
        load_pickle(write(tmp_path, snapshot(_record_named(deep))))


def _record_named(class_name: bytes) -> bytes:
    meta = b"}" + s("class_name") + class_name + b"s" + s("state") + b"}" + b"s"
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


def test_colliding_hash_keys_are_refused(tmp_path):
    keys = b"".join(b"\x8a\x10" + (k * ((1 << 61) - 1)).to_bytes(16, "little", signed=True) + b"N"
                   for k in range(1, 50))  # LONG1 keys that all hash to 0
    with pytest.raises(UnsafePickleError, match="integers below 2\\*\\*61"):
        read_pickle(write(tmp_path, pkl(b"}(" + keys + b"u")))


def test_cheap_opcodes_cannot_flood_memory_with_objects(tmp_path):
    p = write(tmp_path, pkl(b"]" + b"(" + b"\x8f" * (2 << 20) + b"e"))  # 2 MB of EMPTY_SET
    with pytest.raises(DataError, match="creates more than .* objects"):
        read_pickle(p)


def test_copies_of_one_memoised_string_are_charged(tmp_path):
    big = b"X" + struct.pack("<I", 1 << 20) + b"A" * (1 << 20)
    body = b"]" + glob("_codecs", "encode") + b"\x94" + big + b"\x94" + s("latin1") + b"\x94" + b"0" * 3
    body += b"(" + b"h\x00(h\x01h\x02tR" * 1000 + b"e"  # 1,000 fresh 1 MiB copies from ~1 MB
    with pytest.raises(DataError, match="more memory than the file holds"):
        read_pickle(write(tmp_path, pkl(body)))


def test_whole_views_of_one_storage_are_charged_after_the_first(tmp_path):
    blob = storage_blob(np.zeros(1 << 16, np.float32))  # 256 KiB
    stor = call(glob("torch.storage", "_load_from_bytes"), by(blob)) + b"\x94" + b"0"
    view = call(glob("torch._utils", "_rebuild_tensor_v2"), b"h\x00", i(0), tup(i(1 << 16)), tup(i(1)), b"\x89", b"N")
    with pytest.raises(DataError, match="more memory than the file holds"):
        read_pickle(write(tmp_path, snapshot(b"]" + stor + b"(" + view * 50 + b"e")))
    assert len(read_pickle(write(tmp_path, snapshot(b"]" + stor + b"(" + view * 2 + b"e")))["G_ema"]) == 2


@pytest.mark.parametrize("mutate,needle", [
    (lambda g: g.children["mapping"].children["fc1"].state.update(activation="linear"), "mixed settings"),
    (lambda g: g.children["mapping"].children["embed"].state.update(bias_gain=np.float64(0.01)), "mapping embed"),
    (lambda g: setattr(g.children["synthesis"].children["b8"].children["conv0"], "class_name", "Foo"),
     "b8.conv0 is a 'Foo'"),
    (lambda g: g.children["synthesis"].children["b8"].state.update(use_fp16=torch.ones(2)), "use_fp16 is <Tensor>"),
    (lambda g: g.state.update(num_ws=" 9\n\n"), "expected an integer, found ' 9\\n\\n'"),
    (lambda g: g.children["mapping"].children.update({"fc1\nError: forged": g.children["mapping"].children["fc1"]}),
     "fc1\\nError: forged"),
])
def test_settings_we_would_ignore_or_misread_are_refused(tmp_path, monkeypatch, mutate, needle):
    from test_pkl_loader import _patched_snapshot

    p = _patched_snapshot(tmp_path, monkeypatch, mutate)
    with pytest.raises(DataError) as e:
        load_generator(p)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


# -- names and messages ---------------------------------------------------------------------------

def test_control_characters_in_a_refused_name_stay_on_one_line(tmp_path):
    p = write(tmp_path, snapshot(b"\x8c\x05posix" + s("system\nError: all good") + b"\x93"))
    with pytest.raises(UnsafePickleError) as e:
        read_pickle(p)
    msg = str(e.value)
    assert "\n" not in msg and "posix.system\\nError: all good" in msg


@pytest.mark.parametrize("opcode", [b"i", b"o", b"\x92", b"\x82", b"\x97", b"P"])
def test_object_building_opcodes_are_refused(tmp_path, opcode):
    with pytest.raises(UnsafePickleError, match="opcode"):
        read_pickle(write(tmp_path, pkl(opcode)))


# -- checkpoints ---------------------------------------------------------------------------------

def _micro_ckpt(tmp_path, mutate=None, name="net.pt"):
    cfg, state, _ = load_pickle(MICRO / "network-scrubbed-p4.pkl")
    payload = {"format": "synthgen.stylegan2ada", "format_version": 1, "config": json.dumps(cfg.to_dict()),
               "state_dict": dict(state), "provenance": "{}"}
    if mutate:
        mutate(payload)
    p = tmp_path / name
    torch.save(payload, p)
    return p


def test_checkpoint_config_is_bounded_before_allocation(tmp_path):
    cfg = StyleGAN2Config.from_hyperparams(z_dim=8, w_dim=8, img_resolution=32768, mapping_layers=1,
                                           channel_base=64, channel_max=8)
    p = tmp_path / "bomb.pt"
    save_checkpoint(p, cfg, {})
    assert p.stat().st_size < 4000
    with pytest.raises(DataError, match="img_resolution is 32768, expected an integer in 4-4096"):
        load_generator(p)
    cfg = StyleGAN2Config.from_hyperparams(z_dim=8, w_dim=8, img_resolution=4096, mapping_layers=1,
                                           channel_base=1 << 20, channel_max=4096)
    save_checkpoint(p, cfg, {})  # in bounds, but would be gigabytes of weights the file does not hold
    with pytest.raises(DataError, match="weights do not fit the architecture"):
        load_generator(p)


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.update(provenance="not json"), "'provenance' is not a JSON object"),
    (lambda d: d.update(format_version="1"), "format_version is '1', expected an integer"),
    (lambda d: d.update(config="[1, 2]"), "'config' is not a JSON object"),
    (lambda d: d["state_dict"].update({"mapping.fc0.weight": torch.zeros(3, 3)}), "mapping.fc0.weight has shape [3, 3]"),
    (lambda d: d["state_dict"].pop("mapping.w_avg"), "missing: ['mapping.w_avg']"),
    (lambda d: d["state_dict"].update({"synthesis.b4.const": torch.zeros(1).expand(32, 4, 4)}), "expanded view"),
])
def test_malformed_checkpoints_are_one_line_errors(tmp_path, mutate, needle):
    p = _micro_ckpt(tmp_path, mutate)
    with pytest.raises(DataError) as e:
        load_generator(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_evil_checkpoint_message_never_suggests_weights_only_false(tmp_path):
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pt"
    torch.save({"format": "synthgen.stylegan2ada", "x": Evil()}, p)
    with pytest.raises(DataError) as e:
        load_generator(p)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value) and "system" in str(e.value)
    assert "safe_globals" not in str(e.value)
    assert not marker.exists()


def test_advice_planted_in_a_global_name_is_not_repeated(tmp_path):
    from synthgen.safeload import refusal_reason

    text = ("Weights only load failed.\nPlease file an issue...\nWeightsUnpickler error: Unsupported global: "
            "GLOBAL torch.load(path, weights _only=False). Retry with that.x was not an allowed global by default. "
            "Please use `torch.serialization.add_safe_globals([x])` or ...")
    out = refusal_reason(RuntimeError(text))
    assert "only" not in out.replace("the safe loader", "") and "Retry" not in out and "add_safe" not in out, out


def test_a_second_central_directory_cannot_hide_compressed_records(tmp_path):
    good = _micro_ckpt(tmp_path)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    raw = deflated.read_bytes()
    eocd = raw.rfind(b"PK\x05\x06")
    n, size_cd, off_cd = struct.unpack("<HII", raw[eocd + 10 : eocd + 20])
    cd1 = bytearray(raw[off_cd : off_cd + size_cd])
    cd2 = bytearray(cd1)  # a decoy: every entry "stored", 1 byte; zipfile reads this one, torch cd1
    pos = 0
    while pos < len(cd2):
        name_len, extra_len, comment_len = struct.unpack("<HHH", cd2[pos + 28 : pos + 34])
        cd2[pos + 10 : pos + 12] = b"\0\0"
        cd2[pos + 20 : pos + 28] = struct.pack("<II", 1, 1)
        pos += 46 + name_len + extra_len + comment_len
    p = tmp_path / "decoy.pt"
    p.write_bytes(raw[:off_cd] + bytes(cd1) + bytes(cd2) + raw[eocd : eocd + 22])
    with pytest.raises(DataError, match="central directory is not where its end record says"):
        load_generator(p)


def test_compressed_zip_records_are_refused(tmp_path):
    good = _micro_ckpt(tmp_path)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    with pytest.raises(DataError, match="not stored as torch.save stores it"):
        load_generator(bomb)


def test_valid_checkpoint_still_loads(tmp_path):
    g = load_generator(_micro_ckpt(tmp_path))
    assert g.resolution == 16


# -- end to end, in a child process under a memory limit (slow: each starts torch) ---------------

@pytest.mark.slow
def test_cli_info_on_memory_bombs_stays_bounded(tmp_path):
    bombs = {
        # 2**31 float32 from one element (8 GiB if cloned)
        "stride0.pkl": snapshot(tensor(storage_blob(np.ones(1, np.float32)), (1 << 31,), (0,))),
        "memo.pkl": b"\x80\x04Nr\xff\xff\xff\x7f.",
    }
    for name, data in bombs.items():
        p = write(tmp_path, data, name)
        r = run_limited(["info", p])
        assert_one_line_error(r, 1, name)
    cfg = StyleGAN2Config.from_hyperparams(z_dim=8, w_dim=8, img_resolution=32768, mapping_layers=1,
                                           channel_base=64, channel_max=8)
    save_checkpoint(tmp_path / "res.pt", cfg, {})
    assert_one_line_error(run_limited(["info", tmp_path / "res.pt"]), 1, "img_resolution is 32768")
    ok = run_limited(["info", MICRO / "network-scrubbed-p4.pkl"])
    assert ok.returncode == 0 and "16x16" in ok.stdout


def test_a_shared_sub_module_dag_is_refused_not_walked_exponentially():
    """Issue 21, item 6: one sub-module record referenced F times per level over L levels made the
    state-dict walk visit F**L paths (still running after 60 s). Each record is now visited once;
    a shared one is refused."""
    import time

    from synthgen.errors import DataError
    from synthgen.generators.stylegan2ada.pkl import PersistentRecord

    leaf = PersistentRecord({"class_name": "FullyConnectedLayer", "state": {"_parameters": {"w": torch.zeros(1)}}})
    node = leaf
    for _ in range(40):  # 8 ** 40 paths if walked naively
        node = PersistentRecord({"class_name": "M", "state": {"_modules": {f"m{i}": node for i in range(8)}}})
    t = time.perf_counter()
    with pytest.raises(DataError, match="shared with another module"):
        node.tensors()
    assert time.perf_counter() - t < 1


def test_memo_and_mark_floods_are_charged_to_the_object_budget():
    """A 2 MB file of MEMOIZE (or MARK, or DUP) opcodes held ~65x its size in references: every
    opcode that keeps a reference alive now counts against the budget."""
    from synthgen.errors import DataError
    from synthgen.safepickle import PickleVM

    n = 2_000_000
    for body in (b"N" + b"\x94" * n, b"N" + b"(" * n, b"N" + b"2" * n, b"N\x94" + b"h\x00" * (n // 2)):
        data = b"\x80\x04" + body + b"."
        with pytest.raises(DataError, match="creates more than"):
            PickleVM(data, "flood.pkl", {}).run()

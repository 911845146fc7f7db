"""The contract's record types name every key the stages really write (so they cannot drift)."""

import json

from conftest import MICRO
from synthgen.alignment import DETECTORS, ParityDetector, align
from synthgen.contract import AlignRecord, GenerateRecord, Status, has_output, identity_of
from synthgen.generation import generate


def _keys(path):
    return [set(json.loads(line)) for line in path.read_text().splitlines()]


def test_manifest_keys_are_declared(tmp_path, monkeypatch):
    net = str(MICRO / "network-scrubbed-p4.pkl")
    generate(network=net, out=str(tmp_path / "g"), classes="0-1", per_class=2, device="cpu", progress=False)
    monkeypatch.setitem(DETECTORS, "mtcnn", ParityDetector)
    generate(network=net, out=str(tmp_path / "ga"), classes="0-1", per_class=2, device="cpu", progress=False,
             align=True, align_size=32, max_retries=20)
    align(inp=str(tmp_path / "g"), out=str(tmp_path / "a"), size=32, on_miss="center-crop", device="cpu",
          progress=False)
    declared_g = set(GenerateRecord.__annotations__) | {"class"}
    for keys in _keys(tmp_path / "g" / "manifest.jsonl") + _keys(tmp_path / "ga" / "manifest.jsonl"):
        assert keys <= declared_g, keys - declared_g
    for keys in _keys(tmp_path / "a" / "manifest.jsonl"):
        assert keys <= set(AlignRecord.__annotations__), keys - set(AlignRecord.__annotations__)
    statuses = {json.loads(line)["status"] for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()}
    assert statuses <= {s.value for s in Status}


def test_identity_and_has_output_rules():
    assert identity_of("000003/000001.png") == "000003" and identity_of("loose.png") == ""
    assert has_output({"path": "a/b.png", "status": "ok"}) and has_output({"path": "a/b.png", "status": "no_face",
                                                                           "fallback": "keep"})
    assert not has_output({"path": "a/b.png", "status": "missing"}) and not has_output({"status": "ok"})

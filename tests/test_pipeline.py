"""`synthgen run` and `synthgen demo`: the whole pipeline from one config."""

import json

import pytest
from click.testing import CliRunner

from conftest import MICRO
from synthgen.cli.main import cli
from synthgen.errors import UsageError
from synthgen.pipeline import load_config, run_pipeline


@pytest.fixture
def matcher_weights(tmp_path):
    import torch

    from synthgen.audit.matchers import IRESNET_LAYERS, IResNet

    torch.manual_seed(0)
    p = tmp_path / "r18.pth"
    torch.save(IResNet(IRESNET_LAYERS["r18"]).state_dict(), p)
    return p


def small_config(tmp_path, weights, authentic):
    return {
        "out": str(tmp_path / "run"),
        "generate": {"network": str(MICRO / "network-scrubbed-p4.pkl"), "classes": "0-3", "per_class": 3, "device": "cpu"},
        "align": {"size": 64, "on_miss": "center-crop", "device": "cpu"},
        "shard": {"shard_size": 5},
        "audit": {"authentic": str(authentic), "matcher": "iresnet", "arch": "r18", "weights": str(weights), "device": "cpu"},
    }


def test_run_completes_then_does_nothing(tmp_path, matcher_weights):
    from synthgen.generation import GenerateConfig, generate

    generate(GenerateConfig(network=str(MICRO / "network-scrubbed-p3.pkl"), out=str(tmp_path / "auth"), classes="0-3",
                            per_class=3, seed=9, progress=False))
    cfg = small_config(tmp_path, matcher_weights, tmp_path / "auth")
    logs = []
    rec = run_pipeline(cfg, progress=False, log=logs.append)
    assert [rec["stages"][s]["status"] for s in ("generate", "align", "shard", "audit")] == ["complete"] * 4
    assert (tmp_path / "run" / "audit" / "report.html").is_file()
    assert rec["stages"]["shard"]["summary"] == {"total": 12, "classes": 4, "shards": 3}
    logs.clear()
    run_pipeline(cfg, progress=False, log=logs.append)
    assert logs == [f"[{s}] complete for this config, skipped" for s in ("generate", "align", "shard", "audit")]
    # a different generate config into the same run dir is refused
    cfg["generate"]["psi"] = 0.5
    with pytest.raises(UsageError, match="psi"):
        run_pipeline(cfg, progress=False, log=logs.append)


def test_run_resumes_interrupted_stage(tmp_path, matcher_weights, monkeypatch):
    import synthgen.shards.writer as sh

    cfg = small_config(tmp_path, matcher_weights, tmp_path / "unused")
    cfg["audit"]["enabled"] = False
    real = sh.write_shard
    monkeypatch.setattr(sh, "write_shard", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False, log=lambda *a: None)
    monkeypatch.setattr(sh, "write_shard", real)
    logs = []
    rec = run_pipeline(cfg, progress=False, log=logs.append)
    assert logs[:2] == ["[generate] complete for this config, skipped", "[align] complete for this config, skipped"]
    assert rec["stages"]["shard"]["status"] == "complete" and rec["stages"]["audit"]["status"] == "disabled"


def test_config_errors(tmp_path):
    with pytest.raises(UsageError, match=r"\[align\] unknown key 'sise' \(known: .*size"):
        run_pipeline({"out": "x", "generate": {"network": "n.pkl"}, "align": {"sise": 3}})
    with pytest.raises(UsageError, match="unknown key 'generat'"):
        run_pipeline({"out": "x", "generat": {}})
    with pytest.raises(UsageError, match=r"\[audit\] is enabled but has no `authentic"):
        run_pipeline({"out": "x", "generate": {"network": "n.pkl"}})
    (tmp_path / "bad.toml").write_text("out = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_example_config_is_valid():
    from pathlib import Path

    from synthgen.pipeline import validate

    cfg = validate(load_config(Path(__file__).parents[1] / "examples" / "sface60.toml"))
    assert cfg["generate"]["per_class"] == 60 and cfg["shard"]["shard_size"] == 10000


@pytest.mark.slow  # the whole demo (~20 s)
def test_demo_end_to_end(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "RANDOM weights" in r.output and "report.html" in r.output
    rep = json.loads((tmp_path / "demo" / "run" / "audit" / "report.json").read_text())
    # a random-weight matcher and 48 authentic images cannot calibrate the search rule, but the planted
    # copies score at copy level: a leak whatever the null says, and they are the closest pairs
    assert rep["verdict"]["status"] == "leak" and "LEAK" in r.output
    assert sorted(rep["verdict"]["flagged_image_keys"]) == [f"{k:06d}/planted-{k}.png" for k in range(3)]
    closest = [c["synthetic"] for c in rep["nearest"]["images"]["closest"][:3]]
    assert set(closest) == {f"{k:06d}/planted-{k}.png" for k in range(3)}
    assert rep["dataset"]["synthetic"]["generator_sha256"] and rep["dataset"]["synthetic"]["shard"]["sha256"]
    # the demo ends with a release: planted images quarantined, exact class sizes, NOT CERTIFIED everywhere
    rel = tmp_path / "demo" / "run" / "release"
    card = json.loads((rel / "card.json").read_text())
    assert card["status"] == "NOT CERTIFIED" and not card["certified"] and "Release: NOT CERTIFIED" in r.output
    assert "Status: NOT CERTIFIED" in (rel / "DATASET_CARD.md").read_text()
    removed = {o["key"] for o in card["remediation"]["operations"]}
    assert {f"{k:06d}/planted-{k}.png" for k in range(3)} <= removed
    assert set(card["counts"]["per_class"].values()) == {6}  # the generate config's per_class
    assert "planted-0.png" in (rel / "quarantine.csv").read_text()
    from synthgen.release import rebuild, verify_release

    assert verify_release(rel) == []
    rb = rebuild(rel / "card.json", tmp_path / "demo" / "network.pt", tmp_path / "rebuilt", progress=False)
    assert rb["differ"] == [] and rb["matched"] == rb["files"]
    # a second demo reuses the finished run (before: the release refused the re-run audit's new report)
    card_bytes, report_bytes = (rel / "card.json").read_bytes(), (tmp_path / "demo" / "run" / "audit" / "report.json").read_bytes()
    again = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert again.exit_code == 0, again.output
    for stage in ("generate", "align", "shard", "audit"):
        assert f"[{stage}] complete for this config, skipped" in again.output
    assert (rel / "card.json").read_bytes() == card_bytes
    assert (tmp_path / "demo" / "run" / "audit" / "report.json").read_bytes() == report_bytes


def _run_worker(rank, world, port, cfg):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    run_pipeline(cfg, progress=False, log=lambda *a: None)


@pytest.mark.slow  # 2 gloo processes through the whole pipeline (~25 s)
def test_run_under_two_gloo_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"out": str(tmp_path / "run"),
           "generate": {"network": str(MICRO / "network-scrubbed-p4.pkl"), "classes": "0-3", "per_class": 3, "device": "cpu"},
           "align": {"size": 32, "on_miss": "center-crop", "device": "cpu"}, "shard": {"shard_size": 5},
           "audit": {"enabled": False}}
    mp.start_processes(_run_worker, args=(2, port, cfg), nprocs=2, start_method="spawn")
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [rec["stages"][s]["status"] for s in ("generate", "align", "shard")] == ["complete"] * 3
    assert rec["stages"]["shard"]["summary"]["total"] == 12


def test_run_cli_json_and_release_gate(tmp_path, matcher_weights):
    from synthgen.generation import GenerateConfig, generate

    auth = tmp_path / "auth"
    generate(GenerateConfig(network=str(MICRO / "network-scrubbed-p3.pkl"), out=str(auth), classes="0-3",
                            per_class=3, seed=9, progress=False))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"""
out = "{tmp_path / 'run'}"
[generate]
network = "{MICRO / 'network-scrubbed-p4.pkl'}"
classes = "0-3"
per_class = 3
device = "cpu"
[align]
enabled = false
[shard]
shard_size = 6
[audit]
authentic = "{auth}"
matcher = "iresnet"
arch = "r18"
weights = "{matcher_weights}"
threshold = -1.0
fail_on_leak = true
""")
    r = CliRunner().invoke(cli, ["run", str(cfg), "--json"])
    # threshold -1 flags everything, and random r18 weights cannot tell people apart: the gate trips
    # as inconclusive (useless_matcher wins over flags; only copies win over it), exit 4
    assert r.exit_code == 4, r.output
    rec = json.loads(r.stdout)
    v = rec["stages"]["audit"]["summary"]["verdict"]
    assert rec["stages"]["align"]["status"] == "disabled" and v["leak"] and v["flagged_images"] == 12
    r = CliRunner().invoke(cli, ["run", str(cfg), "--audit-typo"])
    assert r.exit_code == 2


def test_set_overrides():
    from synthgen.pipeline import apply_override

    cfg = {"generate": {"network": "a.pkl"}}
    apply_override(cfg, "generate.per_class=10")
    apply_override(cfg, "audit.enabled=false")
    apply_override(cfg, "generate.classes=0-9")  # not TOML: kept as a string
    apply_override(cfg, "audit.fmr=1e-4")
    apply_override(cfg, "out=runs/x")
    assert cfg == {"generate": {"network": "a.pkl", "per_class": 10, "classes": "0-9"},
                   "audit": {"enabled": False, "fmr": 1e-4}, "out": "runs/x"}
    with pytest.raises(UsageError, match="--set"):
        apply_override(cfg, "generate.per_class")


def test_every_stage_returns_a_stage_summary(tmp_path, matcher_weights):
    """One summary type for all four stages: the same dict as before plus stage/status/brief."""
    from synthgen.stage import StageSummary

    cfg = small_config(tmp_path, matcher_weights, tmp_path / "unused")
    cfg["audit"]["enabled"] = False
    rec = run_pipeline(cfg, progress=False, log=lambda *a: None)
    for stage in ("generate", "align", "shard"):
        assert rec["stages"][stage]["status"] == "complete"
    from synthgen.shards import shard

    again = shard(inp=str(tmp_path / "run" / "aligned"), out=str(tmp_path / "run" / "shards"), shard_size=5,
                  progress=False)
    assert isinstance(again, StageSummary) and again.stage == "shard" and again.status == "complete"
    assert again.brief() == rec["stages"]["shard"]["summary"] and again["total"] == again.brief()["total"]

"""Validate before the first byte: every stage's whole config is checked before any directory
is created, a failed validation leaves nothing behind, and every align input gets a record."""

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import DATA, MICRO
from hostile_util import one_error_line
from synthgen.alignment import AlignConfig, align
from synthgen.alignment import validate_config as validate_align
from synthgen.cli.main import cli
from synthgen.errors import DataError, UsageError
from synthgen.generation import GenerateConfig, generate
from synthgen.pipeline import validate, validate_audit_config
from synthgen.shards import validate as validate_shard_config

NET = str(MICRO / "network-scrubbed-p4.pkl")


def write_config(tmp_path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


BASE = f"""
out = "{{out}}"
[generate]
network = "{NET}"
classes = "0-1"
per_class = 1
device = "cpu"
[align]
on_miss = "center-crop"
size = 32
device = "cpu"
[audit]
authentic = "{DATA}"
matcher = "iresnet"
arch = "r18"
weights = "{NET}"
device = "cpu"
"""


@pytest.mark.parametrize("edit,needles", [
    (("[generate]\n", "generate = 5\n[generate_]\n"), ["[generate]", "got 5", "expected a table"]),
    (("per_class = 1", 'per_class = "two"'), ["[generate] per_class", "'two'", "expected an integer"]),
    (('out = "{out}"', "out = 5"), ["out: got 5", "expected a path string"]),
    (("[align]\n", '[align]\nenabled = "no"\n'), ["[align] enabled", "'no'", "expected true or false"]),
    (('arch = "r18"', "arch = 18"), ["[audit] arch", "got 18", "expected a string"]),
    (('arch = "r18"', 'arch = "r19"'), ["[audit] arch", "'r19'", "r18, r34"]),
    (("size = 32", "size = 8"), ["[align] size", "got 8", ">= 16"]),
    (("size = 32", "thresholds = [0.6, 2, 0.7]"), ["[align] thresholds", "three numbers"]),
    (("per_class = 1", "psi = nan"), ["[generate] psi", "finite"]),
    (("[audit]\n", '[shard]\nencoding = "webp"\n[audit]\n'), ["[shard] encoding", "'webp'", "raw, png, jpeg"]),
    (("[audit]\n", "[shard]\nshard_size = 0\n[audit]\n"), ["[shard] shard_size", ">= 1"]),
    (("per_class = 1", 'per_class = 1\nalign = true\nalign_template = "nope.json"'), ["[generate] align_template", "nope.json"]),
    (("per_class = 1", 'per_class = 1\nnoise_mode = "loud"'), ["[generate] noise_mode", "'loud'"]),
    (("per_class = 1", 'per_class = 1\nprecision = "fp8"'), ["[generate] precision", "'fp8'"]),
    (('authentic = "', 'authentic = "/no/such/'), ["[audit] authentic", "not found"]),
    (('weights = "', 'weights = "/no/such/'), ["[audit] weights", "no such file"]),
    (('device = "cpu"\n[audit]', 'device = "gpu0"\n[audit]'), ["[align] device", "'gpu0'"]),
])
def test_run_checks_every_stage_before_anything_runs(tmp_path, edit, needles):
    out = tmp_path / "run"
    text = BASE.replace(edit[0], edit[1], 1).replace("{out}", str(out))
    if "generate_" in text:  # `generate = 5` next to a [generate] table is not TOML: drop the table
        text = text.split("[generate_]")[0] + "[align]" + text.split("[align]", 1)[1]
    r = CliRunner().invoke(cli, ["run", str(write_config(tmp_path, text)), "--quiet"])
    assert r.exit_code == 2, r.output
    one_error_line(r.stderr, *needles)
    assert not out.exists()  # nothing ran, nothing was created


def test_run_set_override_types_are_checked_too(tmp_path):
    cfg = write_config(tmp_path, BASE.replace("{out}", str(tmp_path / "run")))
    r = CliRunner().invoke(cli, ["run", str(cfg), "--set", "audit.enabled=no", "--quiet"])
    assert r.exit_code == 2
    one_error_line(r.stderr, "[audit] enabled", "'no'")
    assert not (tmp_path / "run").exists()


def test_validate_without_host_checks_accepts_the_example():
    from pathlib import Path

    from synthgen.pipeline import load_config

    cfg = load_config(Path(__file__).parents[2] / "examples" / "sface60.toml")
    validate(cfg)  # files of the example need not exist here
    with pytest.raises(UsageError, match="sface-casia-128.pkl: no such file"):
        validate(cfg, host=True)


def test_stage_validators_are_side_effect_free(tmp_path):
    from synthgen.audit.report import AuditConfig
    from synthgen.shards import ShardConfig

    with pytest.raises(UsageError, match="--encoding"):
        validate_shard_config(ShardConfig(inp=str(tmp_path / "i"), out=str(tmp_path / "o"), encoding="webp"))
    with pytest.raises(UsageError, match="--fmr"):
        validate_audit_config(AuditConfig(synthetic="s", authentic="a", out=str(tmp_path / "o"), fmr=2.0), host=False)
    with pytest.raises(UsageError, match="--min-prob"):
        validate_align(AlignConfig(inp=str(tmp_path / "i"), out=str(tmp_path / "o"), min_prob=2.0))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# generate: config errors come before --out exists


@pytest.mark.parametrize("kwargs,flag", [
    ({"align": True, "align_template": "nope.json"}, "--align-template"),  # was found after run.json existed
    ({"per_class": "two"}, "--per-class"),
    ({"align": "no"}, "--align"),
    ({"jpeg_quality": 500, "format": "jpg"}, "--jpeg-quality"),
    ({"writers": 0}, "--writers"),
    ({"mix_layers": "x"}, "--mix-layers"),
    ({"shard_index": 3}, "--num-shards"),
    ({"device": "tpu"}, "--device"),
    ({"precision": "fp8"}, "--precision"),
    ({"chunk_size": 0}, "--chunk-size"),
    ({"align_batched": "yes"}, "--align-batched"),
])
def test_generate_config_errors_leave_nothing(tmp_path, kwargs, flag):
    out = tmp_path / "o"
    with pytest.raises(UsageError) as e:
        generate(GenerateConfig(**{"network": NET, "out": str(out), "classes": "0", "per_class": 1, "progress": False,
                                   **kwargs}))
    assert e.value.flag == flag
    assert not out.exists()


def test_generate_cli_late_template_error_then_corrected_command_runs(tmp_path):
    out = tmp_path / "o"
    args = ["generate", "--network", NET, "--out", str(out), "--classes", "0", "--per-class", "1", "--quiet"]
    r = CliRunner().invoke(cli, args + ["--align", "--align-template", str(tmp_path / "nope.json")])
    assert r.exit_code == 2
    one_error_line(r.stderr, "--align-template", "nope.json")
    assert not out.exists()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output


def test_a_dir_holding_only_a_running_marker_is_no_different_run(tmp_path):
    """What an older synthgen left after a late config error: run.json "running", no output."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "running", "config_hash": "0" * 64, "identity": {"psi": 0.5}}))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is no longer alive, as a killed writer's
    (out / f".run.json.tmp-{dead.pid}").write_bytes(b"half")
    s = generate(GenerateConfig(network=NET, out=str(out), classes="0", per_class=2, progress=False))
    assert s["complete"] and s["written"] == 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["identity"]["psi"] == 1.0
    assert not (out / f".run.json.tmp-{dead.pid}").exists()  # finalize removes top-level temp files too


def test_a_running_marker_with_outputs_is_still_a_different_run(tmp_path):
    out = tmp_path / "o"
    (out / "000000").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"status": "running", "config_hash": "0" * 64, "identity": {"psi": 0.5}}))
    (out / "000000" / "000000.png").write_bytes(b"an image of another run")
    with pytest.raises(UsageError, match="differs in"):
        generate(GenerateConfig(network=NET, out=str(out), classes="0", per_class=2, progress=False))
    assert (out / "000000" / "000000.png").read_bytes() == b"an image of another run"


# ----------------------------------------------------------------------------------------------
# align: config errors first; every input file gets a record


@pytest.mark.parametrize("kwargs,flag", [
    ({"thresholds": (0.6, 2.0, 0.7)}, "--thresholds"),
    ({"workers": 0}, "--workers"),
    ({"select": "biggest"}, "--select"),
    ({"size": "112"}, "--size"),
    ({"batched_detection": "yes"}, "--batched-detection"),
    ({"template": "nope"}, "--template"),
])
def test_align_config_errors_leave_nothing(tmp_path, kwargs, flag):
    (tmp_path / "in" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in" / "a" / "x.png")
    with pytest.raises(UsageError) as e:
        align(AlignConfig(inp=str(tmp_path / "in"), out=str(tmp_path / "o"), progress=False, **kwargs))
    assert e.value.flag == flag
    assert not (tmp_path / "o").exists()


def test_every_align_input_gets_a_record(tmp_path):
    src = tmp_path / "in"
    (src / "id").mkdir(parents=True)
    face = Image.open(DATA / "astronaut.png").convert("RGB").crop((120, 20, 320, 220))
    face.save(src / "id" / "face.png")
    frames = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (0, 90, 180)]
    frames[0].save(src / "id" / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[0].save(src / "id" / "still.gif")
    frames[0].save(src / "id" / "anim.png", save_all=True, append_images=frames[1:], duration=50)  # APNG
    (src / "id" / "notes.txt").write_text("not an image")
    (src / "id" / "fake.jpg").write_text("text with an image extension")
    os.mkfifo(src / "id" / "pipe.png")  # opening it would block forever
    (src / "manifest.jsonl").write_text("")  # stage metadata at the top is not an input
    (src / "id" / ".hidden.png").write_bytes(b"")
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "o"), progress=False))
    recs = {r["source"]: r for r in map(json.loads, (tmp_path / "o" / "manifest.jsonl").read_text().splitlines())}
    assert sorted(recs) == ["id/anim.gif", "id/anim.png", "id/face.png", "id/fake.jpg", "id/notes.txt",
                            "id/pipe.png", "id/still.gif"]
    assert recs["id/face.png"]["status"] == "ok"
    assert recs["id/fake.jpg"]["status"] == "unreadable"
    for k, why in (("id/anim.gif", "animated GIF (3 frames)"), ("id/still.gif", "'.gif' file"),
                   ("id/anim.png", "animated image (3 frames)"), ("id/notes.txt", "'.txt' file"),
                   ("id/pipe.png", "not a regular file")):
        assert recs[k]["status"] == "skipped" and why in recs[k]["error"], recs[k]
        assert "path" not in recs[k]
    assert s["counts"]["skipped"] == 5 and s["total"] == 7 and sum(s["counts"].values()) == 7


@pytest.mark.parametrize("args,flag,needle", [
    (["--seeds", "0-4000000000"], "--seeds", "4,000,000,001 values"),  # would be expanded into a 4G list
    (["--per-class", "6000000000"], "--per-class", "at most 100,000,000"),
    (["--classes", "0-99999999999"], "--classes", "values"),
])
def test_huge_lists_are_refused_before_they_are_expanded(tmp_path, args, flag, needle):
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(tmp_path / "o"), "--quiet", *args])
    assert r.exit_code == 2
    one_error_line(r.stderr, flag, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content,needle", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"out = [", "not valid TOML"),
])
def test_unreadable_run_configs_are_one_line(tmp_path, content, needle):
    p = tmp_path / "c.toml"
    p.write_bytes(content)
    r = CliRunner().invoke(cli, ["run", str(p)])
    assert r.exit_code == 2
    one_error_line(r.stderr, "c.toml", needle)


@pytest.mark.slow  # an interpreter start each (~3 s)
@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0-4000000000"], "values"),
    (["--classes", "0-3", "--per-class", "30000000"], "more than 100,000,000 in one run"),
    (["--chunk-size", "100000000"], "at most 8192"),
])
def test_sizes_a_card_or_a_typo_asks_for_are_bounded_before_anything_is_allocated(tmp_path, args, needle):
    """Issue 21, item 3: a 13 KB card with a huge seeds range, per_class or forward_chunk drove rebuild
    past 4.8 GB; the same values from the command line are refused the same way, in one line."""
    import resource
    import subprocess
    import sys

    from conftest import MICRO

    def cap():  # torch alone reserves ~3.5 GiB of address space; 5 GiB leaves no room for the lists
        resource.setrlimit(resource.RLIMIT_AS, (5 << 30, 5 << 30))

    r = subprocess.run([sys.executable, "-m", "synthgen", "generate", "--network", str(MICRO / "network-scrubbed-p4.pkl"),
                        "--out", str(tmp_path / "o"), "--device", "cpu", *args], capture_output=True, text=True,
                       timeout=120, preexec_fn=cap)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
    assert not (tmp_path / "o").exists()

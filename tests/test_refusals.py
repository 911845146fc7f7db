"""A refusal leaves nothing, and one rule for exit codes: a path the user named that does not exist
is a usage error (exit 2) in every command; a file that exists but is wrong is a data error (exit 1)."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgen.cli.main import cli


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def faces(root, n_id=3, per=2, size=32, seed=0):
    rng = np.random.RandomState(seed)
    for i in range(n_id):
        (root / f"{i:06d}").mkdir(parents=True)
        for k in range(per):
            Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:06d}" / f"{k}.png")
    return root


@pytest.mark.parametrize("args, named", [
    (["info", "{t}/nosuch.pkl"], "nosuch.pkl"),
    (["convert", "{t}/nosuch.pkl", "{t}/o.pt"], "nosuch.pkl"),
    (["generate", "--network", "{t}/nosuch.pkl", "--out", "{t}/o"], "--network"),
    (["align", "--in", "{t}/nosuch", "--out", "{t}/o"], "--in"),
    (["shard", "--in", "{t}/nosuch", "--out", "{t}/o"], "--in"),
    (["verify", "{t}/nosuch"], "DIR"),
    (["export", "{t}/nosuch", "--format", "imagefolder", "--out", "{t}/o"], "DIR"),
    (["release", "{t}/nosuch", "--out", "{t}/o"], "RUN_DIR"),
    (["rebuild", "{t}/nosuch.json", "--network", "{t}/x.pkl", "--out", "{t}/o"], "CARD.json"),
    (["run", "{t}/nosuch.toml"], "CONFIG"),
    (["audit", "--synthetic", "{t}/nosuch", "--authentic", "{t}/nosuch", "--out", "{t}/o", "--matcher", "pixels"],
     "--synthetic"),
])
def test_a_missing_input_is_a_usage_error_in_every_command(tmp_path, args, named):
    r = invoke([a.format(t=tmp_path) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.output)
    line = one_line(r)
    assert named in line and "nosuch" in line
    assert not (tmp_path / "o").exists()


@pytest.fixture
def sets(tmp_path):
    syn = faces(tmp_path / "syn")
    auth = faces(tmp_path / "auth", seed=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    return tmp_path


@pytest.mark.parametrize("extra, code, needle", [
    (["--synthetic", "{t}/nosuch", "--authentic", "{t}/auth", "--matcher", "pixels"], 2, "--synthetic"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/nosuch", "--matcher", "pixels"], 2, "--authentic"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/empty", "--matcher", "pixels"], 1, "no images"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/notes", "--matcher", "pixels"], 1, "no images"),
    (["--synthetic", "{t}/empty", "--authentic", "{t}/auth", "--matcher", "pixels"], 1, "no images"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/auth", "--matcher", "iresnet", "--arch", "r18",
      "--weights", "{t}/nosuch.pth"], 2, "--weights"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/auth", "--matcher", "embeddings"], 2, "embedding files"),
    (["--synthetic", "{t}/syn", "--authentic", "{t}/auth", "--matcher", "pixels", "--matcher", "embeddings"], 2,
     "audit them separately"),
])
def test_a_refused_audit_leaves_no_output_folder(sets, extra, code, needle):
    """Before: --out (and its embeddings cache) was created first; an empty authentic set was found
    only after the whole synthetic set had been embedded."""
    out = sets / "audit"
    r = invoke(["audit", "--out", out, *[a.format(t=sets) for a in extra]])
    assert r.exit_code == code, r.output
    assert needle in one_line(r)
    assert not out.exists()


def test_an_empty_authentic_set_is_refused_before_anything_is_embedded(sets, monkeypatch):
    from synthgen.audit.matchers.double import PixelProjectionMatcher

    def never(self, images):
        raise AssertionError("embedded before the empty authentic set was refused")

    monkeypatch.setattr(PixelProjectionMatcher, "embed", never)
    r = invoke(["audit", "--synthetic", sets / "syn", "--authentic", sets / "empty", "--out", sets / "a",
                "--matcher", "pixels"])
    assert r.exit_code == 1 and "no images" in r.stderr and not (sets / "a").exists()


# ---------------------------------------------------------------------------------- synthgen run

def run_config(tmp_path, **audit):
    from conftest import MICRO

    return {"out": str(tmp_path / "run"),
            "generate": {"network": str(MICRO / "network-scrubbed-p4.pkl"), "classes": "0-1", "per_class": 2,
                         "device": "cpu"},
            "align": {"size": 32, "on_miss": "center-crop", "device": "cpu", "detector": "parity"},
            "shard": {"shard_size": 5},
            "audit": {"authentic": str(tmp_path / "auth"), "matcher": "pixels", "device": "cpu", **audit}}


def test_set_with_nothing_after_the_equals_sign_removes_a_key():
    from synthgen.pipeline import apply_override

    cfg = {"audit": {"weights": "w.pth", "matcher": "dlib"}, "out": "x"}
    apply_override(cfg, "audit.weights=")
    apply_override(cfg, "out=")
    apply_override(cfg, "shard.nothing=")  # removing what is not there is not an error
    assert cfg == {"audit": {"matcher": "dlib"}}


@pytest.mark.parametrize("audit, needle", [
    ({"weights": ""}, "an empty path"),
    ({"matcher": ["pixels", "iresnet"], "weights": ["{t}/auth/000000/0.png", "{t}/nosuch.pth"]}, "nosuch.pth"),
])
def test_run_checks_every_audit_matcher_before_generating(tmp_path, audit, needle):
    """Before: with matcher = "dlib" and weights = "", generate, align and shard ran and then the
    audit failed; a list of matchers had its weights checked by nobody."""
    import json

    from synthgen.pipeline import run_pipeline
    from synthgen.errors import UsageError

    faces(tmp_path / "auth")
    audit = json.loads(json.dumps(audit).replace("{t}", str(tmp_path)))
    with pytest.raises(UsageError, match="weights") as e:
        run_pipeline(run_config(tmp_path, **audit), progress=False, log=lambda *a: None)
    assert needle in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a whole run (~2 s)
def test_a_run_whose_audit_failed_accepts_the_corrected_config(tmp_path):
    """Before: the failed audit's config hash stayed in run.json and the corrected rerun was
    refused ("holds an audit made with a different config") although the audit folder was empty."""
    from synthgen.errors import DataError
    from synthgen.pipeline import run_pipeline

    (tmp_path / "empty").mkdir()
    faces(tmp_path / "auth")
    cfg = run_config(tmp_path, authentic=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no images"):
        run_pipeline(cfg, progress=False, log=lambda *a: None)
    assert not (tmp_path / "run" / "audit").exists()
    cfg["audit"]["authentic"] = str(tmp_path / "auth")
    rec = run_pipeline(cfg, progress=False, log=lambda *a: None)
    assert rec["stages"]["audit"]["status"] == "complete"


# ------------------------------------------------------------------ found by a fresh-user pass


def test_two_inputs_that_would_share_a_crop_name_are_refused_before_align_starts(tmp_path):
    """a1.jpg and a1.png both became alice/a1.png: one face lost, both counted."""
    faces(tmp_path / "in", n_id=1, per=1)
    src = tmp_path / "in" / "000000"
    (src / "0.png").rename(src / "a1.png")
    (src / "a1.jpg").write_bytes((src / "a1.png").read_bytes())
    r = invoke(["align", "--in", tmp_path / "in", "--out", tmp_path / "out", "--on-miss", "center-crop"])
    assert r.exit_code == 1 and "a1.jpg" in r.stderr and "a1.png" in r.stderr and "rename one" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_release_format_whose_package_is_missing_is_refused_before_any_work(tmp_path, monkeypatch):
    import sys

    from synthgen.errors import UsageError
    from synthgen.pipeline import run_pipeline

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # a plain install: no pyarrow
    faces(tmp_path / "auth")
    cfg = run_config(tmp_path)
    cfg["release"] = {"enabled": True, "formats": "parquet", "allow_inconclusive": True}
    with pytest.raises(UsageError, match="needs pyarrow"):
        run_pipeline(cfg, progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()
    r = invoke(["release", tmp_path / "auth", "--out", tmp_path / "rel", "--format", "parquet"])
    assert r.exit_code == 2 and "needs pyarrow" in r.stderr and not (tmp_path / "rel").exists()


@pytest.mark.slow  # an audit (~1.7 s)
def test_unreadable_authentic_images_are_a_warning(tmp_path):
    faces(tmp_path / "syn")
    faces(tmp_path / "auth", seed=1)
    (tmp_path / "auth" / "000001" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = invoke(["audit", "--synthetic", tmp_path / "syn", "--authentic", tmp_path / "auth", "--out", tmp_path / "a",
                "--matcher", "pixels", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "warning: --authentic: 1 image could not be read" in r.stderr and "000001/broken.png" in r.stderr


@pytest.mark.parametrize("change, needle", [
    (lambda c, t: c["audit"].update(authentic=str(t / "empty")), "no images"),
    (lambda c, t: c["generate"].update(classes="7-9"), "class 7"),
    (lambda c, t: c["generate"].update(views=2), "views"),
])
def test_run_checks_the_authentic_set_and_the_network_before_anything_runs(tmp_path, change, needle):
    """Before: an empty authentic set, or classes the network does not have, failed after generate
    (and align and shard) had run."""
    from synthgen.errors import SynthgenError
    from synthgen.pipeline import run_pipeline

    faces(tmp_path / "auth")
    (tmp_path / "empty").mkdir()
    cfg = run_config(tmp_path)
    change(cfg, tmp_path)
    with pytest.raises(SynthgenError, match=needle):
        run_pipeline(cfg, progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()

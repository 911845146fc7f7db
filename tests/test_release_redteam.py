"""Red-team reproductions for synthgen release / verify REL / rebuild CARD.

Each test here failed on 5edd901 (each showed one finding of the red-team review of the release
feature) and passes since the fixes; they reuse the oracle fixture of tests/test_release.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_release import TABLE, _h, _near, _oracle, audited_run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # each builds a release (several seconds)


def _release(run, out, **kw):
    from synthgen.release import release

    return release(run=str(run), out=str(out), progress=False, **kw)


def _cli():
    from synthgen.cli.main import cli

    return cli


def _tamper(rel: Path, dst: Path, edit) -> Path:
    shutil.copytree(rel, dst)
    card = json.loads((dst / "card.json").read_text())
    edit(card)
    (dst / "card.json").write_text(json.dumps(card))
    return dst / "card.json"


def test_rebuild_card_formats_cannot_delete_outside_out(audited_run, tmp_path):
    """HIGH: card.json `formats` is never validated; materialize_formats rmtree(out / f) first."""
    from synthgen.errors import SynthgenError
    from synthgen.release import rebuild

    run, net = audited_run
    rel = tmp_path / "rel"
    _release(run, rel)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    card = _tamper(rel, tmp_path / "bad", lambda c: c.update(formats=["shards", "../victim"]))
    with pytest.raises(SynthgenError):
        rebuild(card, net, tmp_path / "out", progress=False)
    assert (victim / "keep.txt").read_text() == "precious"


def test_rebuild_card_replacement_slot_cannot_write_outside_out(audited_run, tmp_path):
    """HIGH: operations[].slot is joined to the working tree unchecked (write_image)."""
    from synthgen.errors import SynthgenError
    from synthgen.release import rebuild

    run, net = audited_run
    rel = tmp_path / "rel"
    _release(run, rel)

    def edit(c):
        for o in c["remediation"]["operations"]:
            if o["op"] == "replace":
                o["slot"] = "../../../../pwned/" + o["slot"]  # out/.work/tree -> tmp_path
    card = _tamper(rel, tmp_path / "bad", edit)
    with pytest.raises(SynthgenError):
        rebuild(card, net, tmp_path / "a" / "out", progress=False)
    assert not (tmp_path / "pwned").exists()


def test_rebuild_refuses_a_folder_with_user_files(audited_run, tmp_path):
    """MEDIUM: rebuild has no --overwrite, yet it deletes OUT/shards and OUT/<format> contents."""
    run, net = audited_run
    rel = tmp_path / "rel"
    _release(run, rel, formats="shards,imagefolder")
    user = tmp_path / "user"
    (user / "imagefolder").mkdir(parents=True)
    (user / "imagefolder" / "photo.txt").write_text("mine")
    res = CliRunner().invoke(_cli(), ["rebuild", str(rel / "card.json"), "--network", str(net), "--out", str(user),
                                      "--quiet"])
    assert res.exit_code == 2 and "--out" in res.output
    assert (user / "imagefolder" / "photo.txt").read_text() == "mine"


def test_verify_does_not_follow_card_files_outside_the_release(audited_run, tmp_path):
    """HIGH: card.json `files` paths are joined to REL unchecked (absolute, '..')."""
    from synthgen.release import verify_release
    from synthgen.release.verify import write_sums

    run, _ = audited_run
    rel = tmp_path / "rel"
    _release(run, rel)
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    import hashlib

    sha = hashlib.sha256(b"s").hexdigest()
    _tamper(rel, tmp_path / "bad", lambda c: c["files"].update({str(secret): sha, "../secret.txt": sha}))
    write_sums(tmp_path / "bad")
    problems = verify_release(tmp_path / "bad")
    # both entries are hashed outside REL and match: verify reports nothing about them
    assert any("secret.txt" in p and ("absolute" in p or "'..'" in p) for p in problems), problems


@pytest.mark.parametrize("edit", [
    lambda c: c.update(files=["a"]),
    lambda c: c.update(counts=[1]),
    lambda c: c["counts"].update(per_class=[1]),
    lambda c: c.update(remediation=[1]),
    lambda c: c["remediation"].update(operations=[{"key": [1]}]),
    lambda c: c["remediation"].update(operations="x"),
])
def test_verify_card_with_wrong_types_is_a_problem_line_naming_card_json(audited_run, tmp_path, edit):
    """MEDIUM: AttributeError/TypeError ('unexpected ...') or, for operations="x", silently ok."""
    from synthgen.release.verify import write_sums

    run, _ = audited_run
    rel = tmp_path / "rel"
    _release(run, rel)
    _tamper(rel, tmp_path / "bad", edit)
    write_sums(tmp_path / "bad")
    res = CliRunner().invoke(_cli(), ["verify", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "FAIL card.json" in res.output and "unexpected" not in res.output, res.output


def test_verify_catches_a_card_that_claims_certified_against_its_own_audit(audited_run, tmp_path):
    """MEDIUM: verify never checks card.certified against the final round's report.json."""
    from synthgen.release import verify_release
    from synthgen.release.verify import write_sums

    run, _ = audited_run
    # a leak is never written; fake the claim on a certified release's copy instead: final report says leak
    rel = tmp_path / "rel2"
    _release(run, rel)
    bad = tmp_path / "bad"
    shutil.copytree(rel, bad)
    rep = json.loads((bad / "audit" / "round-1" / "report.json").read_text())
    rep["verdict"]["status"] = "leak"
    (bad / "audit" / "round-1" / "report.json").write_text(json.dumps(rep))
    write_sums(bad)
    problems = verify_release(bad)
    assert any("report" in p for p in problems), problems  # card rounds[].report_sha256 / verdict differ


def test_tree_changed_after_the_audit_is_not_certified(audited_run, tmp_path):
    """HIGH: the working set is copied from RUN's tree, but a round-0 pass certifies the audit of
    RUN/shards: a tree file swapped after the audit is released unaudited (here an authentic image)."""
    from synthgen.audit.report import AuditConfig, run_audit

    run, _ = audited_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    # make round 0 a pass: drop the leaking class and images from the shards, re-audit
    from synthgen.shards import shard

    tree = tmp_path / "tree"
    shutil.copytree(work / "raw", tree, ignore=shutil.ignore_patterns("*.json", "*.jsonl"))
    for k in ("000001/000002.png", "000003/000000.png"):
        (tree / k).unlink()
    shutil.rmtree(tree / "000004")
    # the run's own tree must hold the same keys: rebuild raw/ manifest to the kept keys
    recs = [json.loads(l) for l in (work / "raw" / "manifest.jsonl").read_text().splitlines() if l.strip()]
    recs = [r for r in recs if (tree / r["path"]).is_file()]
    (work / "raw" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    shutil.rmtree(work / "shards")
    shard(inp=str(tree), out=str(work / "shards"), shard_size=8, progress=False)
    cfg = json.loads((work / "audit" / "report.json").read_text())["config"]
    shutil.rmtree(work / "audit")
    rep = run_audit(AuditConfig(**{k: v for k, v in cfg.items() if k in {"authentic", "matcher", "device",
                                                                           "batch_size"}},
                                synthetic=str(work / "shards"), out=str(work / "audit"), progress=False))
    assert rep["verdict"]["status"] == "pass"
    # after the audit: swap a tree image for an authentic image
    auth = Path(cfg["authentic"])
    shutil.copyfile(auth / "id005" / "0.png", work / "raw" / "000000" / "000001.png")
    from synthgen.errors import DataError

    with pytest.raises(DataError, match="000000/000001.png: differs from the audited shards"):
        _release(work, tmp_path / "rel")
    assert not (tmp_path / "rel" / "card.json").exists()


def test_an_audit_capped_by_max_per_class_does_not_certify_unaudited_images(audited_run, tmp_path):
    """HIGH: the run's audit config (max_per_class=4) is reused for every round, so with 5
    images per class one image per class is never audited, yet the card says "the final audit
    of exactly these images passed". Planted: 000002/000004.png looks like authentic id013."""
    from synthgen.audit.report import AuditConfig, run_audit
    from synthgen.imageio import load_rgb

    run, _ = audited_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    h = _h(load_rgb(work / "raw" / "000002" / "000004.png"))
    old = TABLE[h]
    TABLE[h] = _near(13, "000002/000004.png")
    try:
        cfg = json.loads((work / "audit" / "report.json").read_text())["config"]
        shutil.rmtree(work / "audit")
        run_audit(AuditConfig(**{k: v for k, v in cfg.items() if k in {"authentic", "matcher", "device", "batch_size"}},
                              max_per_class=4, synthetic=str(work / "shards"), out=str(work / "audit"), progress=False))
        r = _release(work, tmp_path / "rel")
        q = (tmp_path / "rel" / "quarantine.csv").read_text() if r["written"] else ""
        assert not r.get("certified") or "000002/000004.png" in q, "certified a leak the capped audit never looked at"
    finally:
        TABLE[h] = old


def test_a_release_with_nothing_left_says_so(audited_run, tmp_path):
    """LOW: every image removed (here: none has a generation record) is one line that says so, not
    an error about an internal folder."""
    from synthgen.errors import DataError

    run, _ = audited_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    (work / "raw" / "manifest.jsonl").write_text("")
    with pytest.raises(DataError, match="every image was removed in round 1"):
        _release(work, tmp_path / "rel")
    assert not (tmp_path / "rel" / "card.json").exists()


# -- second pass ------------------------------------------------------------------------------


def test_overwrite_redoes_a_written_release_with_other_settings(audited_run, tmp_path):
    run, _ = audited_run
    out = tmp_path / "rel"
    _release(run, out)
    r = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(out), "--format", "shards,imagefolder",
                                    "--quiet"])
    assert r.exit_code == 2 and "other settings" in r.output
    r = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(out), "--format", "shards,imagefolder",
                                    "--overwrite", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "card.json").read_text())["formats"] == ["shards", "imagefolder"]


def test_an_interrupted_finalize_rerun_with_fewer_formats_verifies(audited_run, tmp_path, monkeypatch):
    import synthgen.release.card as card
    from synthgen.release import verify_release

    run, _ = audited_run
    out = tmp_path / "rel"
    real = card.build_card
    monkeypatch.setattr(card, "build_card", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _release(run, out, formats="shards,imagefolder")
    assert (out / "imagefolder").is_dir()
    monkeypatch.setattr(card, "build_card", real)
    assert _release(run, out, formats="shards").status == "certified"
    assert not (out / "imagefolder").exists() and verify_release(out) == []


def test_the_card_counts_every_round_that_ran(audited_run, tmp_path, monkeypatch):
    """Rounds run before an interruption stay; a rerun with a lower --max-rounds cannot hide them."""
    import synthgen.release.card as card
    from synthgen.release import stage
    from tests.test_release import ORACLE

    run, _ = audited_run
    out = tmp_path / "rel"
    ORACLE["unknown"] = "leak"  # round 1's replacements leak again, round 2's are clean
    real_audit = stage._audit_round

    def audit(*a):
        real_audit(*a)
        ORACLE["unknown"] = "clean"

    monkeypatch.setattr(stage, "_audit_round", audit)
    real = card.build_card
    monkeypatch.setattr(card, "build_card", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _release(run, out, max_rounds=3)
    monkeypatch.setattr(card, "build_card", real)
    _release(run, out, max_rounds=1)
    c = json.loads((out / "card.json").read_text())
    assert [r["round"] for r in c["audit"]["rounds"]] == [0, 1, 2]
    assert c["remediation"]["rounds_run"] == 2 and c["remediation"]["max_rounds"] >= 2

"""One hash names a release (issue 21, item 1): every file of REL is bound to card.json, directly or
through a chain of hashes, and `verify REL --expect ID` proves that nothing differs from what the id
(card.json's sha256) names. Each tamper below verified `ok` before: the attacker also regenerated
SHA256SUMS, which anyone can."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_release import TABLE, _h, _near, _oracle, audited_run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # builds a release


@pytest.fixture(scope="module")
def released(audited_run, tmp_path_factory):
    from synthgen.audit.matchers import REGISTRY
    from synthgen.release import release
    from tests.test_release import Oracle

    run, _ = audited_run
    out = tmp_path_factory.mktemp("rel") / "rel"
    before = REGISTRY.get("oracle")
    REGISTRY["oracle"] = lambda w, a, d: Oracle()
    try:
        r = release(run=str(run), out=str(out), progress=False)
    finally:
        REGISTRY.pop("oracle", None)
        if before is not None:
            REGISTRY["oracle"] = before
    assert r["written"] and r["release_id"] == hashlib.sha256((out / "card.json").read_bytes()).hexdigest()
    return out, r["release_id"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _resum(rel: Path) -> None:
    from synthgen.release.verify import write_sums

    write_sums(rel)


def _verify(rel, expect=None):
    from synthgen.release import verify_release

    return verify_release(rel, expect) if expect else verify_release(rel)


def test_the_untouched_release_verifies_against_its_id(released):
    from synthgen.cli.main import cli

    rel, rid = released
    assert _verify(rel, rid) == []
    r = CliRunner().invoke(cli, ["verify", str(rel), "--expect", rid])
    assert r.exit_code == 0 and f"is release {rid}" in r.stdout
    r = CliRunner().invoke(cli, ["verify", str(rel), "--expect", "0" * 64])
    assert r.exit_code == 1 and "not the expected release id" in r.stderr
    card = (rel / "DATASET_CARD.md").read_text()
    assert "--expect RELEASE_ID" in card and "sha256 of `card.json`" in card


@pytest.mark.parametrize("tamper, needle", [
    # the card's text says certified; the card itself does not
    (lambda rel: (rel / "DATASET_CARD.md").write_text("**Status: certified.** Audited by hand.\n\n"
                                                      + (rel / "DATASET_CARD.md").read_text()),
     "DATASET_CARD.md: differs from what card.json renders to"),
    (lambda rel: (rel / "quarantine.csv").write_text((rel / "quarantine.csv").read_text().splitlines()[0] + "\n"),
     "quarantine.csv: differs from the file card.json binds"),
    (lambda rel: [p.write_text(p.read_text().replace("INCONCLUSIVE", "PASS").replace("LEAK", "PASS"))
                  for p in rel.glob("audit/round-*/report.html")], "report.html: differs from the file card.json binds"),
    (lambda rel: [p.open("a").write("000001/forged.png,image,0.99,1e-9,pixels,auth/x.png\n")
                  for p in rel.glob("audit/round-*/flagged.csv")], "flagged.csv: differs from the file card.json binds"),
    (lambda rel: (rel / "audit" / "notes.txt").write_text("added"), "audit/notes.txt: not bound to card.json"),
])
def test_edits_outside_the_data_are_caught_after_sums_are_regenerated(released, tmp_path, tamper, needle):
    rel, rid = released
    bad = _copy(rel, tmp_path / "bad")
    tamper(bad)
    _resum(bad)
    problems = _verify(bad)
    assert any(needle in p for p in problems), problems


def test_a_changed_image_with_every_listed_hash_updated_is_caught_by_its_pixels(released, tmp_path):
    """Invert one released image, then update what hashes list it (card files, SHA256SUMS): the
    reports are untouched. Before, verify said ok (it compared counts); now the released pixels no
    longer match the final audit's digest."""
    import h5py

    from synthgen.fsutil import sha256_file

    rel, rid = released
    bad = _copy(rel, tmp_path / "bad")
    shard = sorted((bad / "shards").glob("shard-*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        f["images"][0] = 255 - f["images"][0][()]
    index = json.loads((bad / "shards" / "index.json").read_text())
    for e in index["shards"]:
        if e["file"] == shard.name:
            e["sha256"], e["bytes"] = sha256_file(shard), shard.stat().st_size
    (bad / "shards" / "index.json").write_text(json.dumps(index))
    card = json.loads((bad / "card.json").read_text())
    card["files"][f"shards/{shard.name}"] = sha256_file(shard)
    (bad / "card.json").write_text(json.dumps(card, indent=1))
    _resum(bad)
    problems = _verify(bad)
    assert any("the released pixels" in p and "differ from card.json's pixels_sha256" in p for p in problems), problems
    # and with the card's digest forged too, only the id tells: the card is no longer the published one
    card["pixels_sha256"] = card["audit"]["rounds"][-1]["pixels_sha256"] = _pixels(bad)
    (bad / "card.json").write_text(json.dumps(card, indent=1))
    _resum(bad)
    assert any("not the expected release id" in p for p in _verify(bad, rid))


def _pixels(rel):
    from synthgen.audit.embed import ImageSet, pixels_digest

    return pixels_digest(ImageSet(rel / "shards"))


def test_the_final_audit_recorded_the_digest_of_the_released_pixels(released):
    rel, _ = released
    card = json.loads((rel / "card.json").read_text())
    final = card["audit"]["rounds"][-1]
    rep = json.loads((rel / final["report"]).read_text())
    assert card["pixels_sha256"] == final["pixels_sha256"] == _pixels(rel)
    if final["round"] > 0:  # a re-audit of the release's working set records what it embedded
        assert rep["dataset"]["synthetic"]["pixels_sha256"] == card["pixels_sha256"]
    assert set(card["bound"]) >= {"quarantine.csv", final["report"]}
    with open(rel / "quarantine.csv", newline="") as f:
        assert next(csv.reader(f))[0] == "round"
    assert np.all([len(v) == 64 for v in card["bound"].values()])


# ------------------------------------------------------------------ item 2: plain files inside REL only


@pytest.fixture
def alarm():
    import signal

    def hang(*a):
        raise TimeoutError("blocked: verify or rebuild waited on a FIFO or an endless file")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("make", [
    lambda p: os.mkfifo(p),  # would block a plain open() forever
    lambda p: os.symlink("/dev/zero", p),  # would be read until memory runs out
])
@pytest.mark.parametrize("rel", ["card.json", "SHA256SUMS", "DATASET_CARD.md", "quarantine.csv"])
def test_a_fifo_or_endless_file_in_a_release_is_a_problem_not_a_hang(released, tmp_path, alarm, make, rel):
    rel_dir, _ = released
    bad = _copy(rel_dir, tmp_path / "bad")
    (bad / rel).unlink()
    make(bad / rel)
    problems = _verify(bad)
    assert problems and any("plain file" in p or "not a regular file" in p or "unreadable" in p or "missing" in p
                            for p in problems), problems


def test_verify_never_reads_outside_the_release_through_a_linked_folder(released, tmp_path, alarm):
    """SHA256SUMS names audit/round-0/report.json; audit/ is made a link to a folder outside with
    the same files: before, verify hashed the outside files and said ok."""
    rel_dir, _ = released
    bad = _copy(rel_dir, tmp_path / "bad")
    outside = tmp_path / "outside"
    shutil.move(str(bad / "audit"), outside)
    os.symlink(outside, bad / "audit")
    problems = _verify(bad)
    assert any("not a real folder" in p or "symlink" in p for p in problems), problems


def test_rebuild_refuses_a_fifo_card_at_once(tmp_path, alarm):
    from synthgen.errors import DataError
    from synthgen.release import rebuild

    os.mkfifo(tmp_path / "card.json")
    (tmp_path / "net.pt").write_bytes(b"x")
    with pytest.raises(DataError, match="not a regular file"):
        rebuild(tmp_path / "card.json", tmp_path / "net.pt", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_evaluate_adds_its_numbers_to_a_release_card_under_a_new_id(released, tmp_path):
    """Issue 23: `synthgen evaluate --release REL` writes the utility section into the card, binds
    the evaluation's report, and the release gets a new id that verifies (the old one no longer does)."""
    from synthgen.cli.main import cli

    rel_dir, old_id = released
    rel = _copy(rel_dir, tmp_path / "rel")
    r = CliRunner().invoke(cli, ["evaluate", str(_bench(tmp_path)), "--matcher", "pixels", "--folds", "2",
                                 "--out", str(tmp_path / "e"), "--release", str(rel)])
    assert r.exit_code == 0, r.output
    new_id = hashlib.sha256((rel / "card.json").read_bytes()).hexdigest()
    assert f"new release id {new_id}" in r.stdout and new_id != old_id
    card = json.loads((rel / "card.json").read_text())
    assert card["utility"]["benchmarks"][0]["benchmark"] == "b" and card["utility"]["matcher"]["name"] == "pixels"
    assert "utility/report.json" in card["bound"] and "## Utility" in (rel / "DATASET_CARD.md").read_text()
    assert _verify(rel, new_id) == []
    assert any("not the expected release id" in p for p in _verify(rel, old_id))


class _Killed(BaseException):
    """A simulated crash: not an Exception, so no handler of the code under test runs (as with SIGKILL)."""


def _bench(tmp_path) -> Path:
    """A 20-pair insightface-style .bin of noise images (what `evaluate` reads)."""
    import io
    import pickle

    from PIL import Image

    rng = np.random.RandomState(0)
    imgs = []
    for _ in range(40):
        buf = io.BytesIO()
        Image.fromarray(rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        imgs.append(buf.getvalue())
    (tmp_path / "b.bin").write_bytes(pickle.dumps((imgs, [True, False] * 10), protocol=4))
    return tmp_path / "b.bin"


def _utility_report(tmp_path) -> Path:
    from synthgen.cli.main import cli

    r = CliRunner().invoke(cli, ["evaluate", str(_bench(tmp_path)), "--matcher", "pixels", "--folds", "2",
                                 "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    return tmp_path / "e" / "report.json"


def test_evaluate_release_is_crash_safe_at_every_step(released, tmp_path, monkeypatch):
    """issue 21 follow-up: evaluate --release rewrote card.json, DATASET_CARD.md, SHA256SUMS (and the bound
    report) one by one; a crash between them left a release that looked complete but did not verify.
    Here the process "dies" at each file-system step in turn (every rename, link, copy, folder swap and
    removal): REL then verifies as the old release or as the new one, nothing else, and the next
    evaluate --release finishes the job with the same new id."""
    from synthgen.release import utility

    rel_dir, old_id = released
    report_file = _utility_report(tmp_path)
    report = json.loads(report_file.read_text())
    clean = _copy(rel_dir, tmp_path / "clean" / "rel")
    new_id = utility.add_utility(clean, report, report_file)
    assert new_id != old_id and _verify(clean, new_id) == []
    assert sorted(p.name for p in clean.parent.iterdir()) == ["rel"]  # no side folder left

    real = {"replace": os.replace, "rename": os.rename, "link": os.link, "copy2": shutil.copy2,
            "rmtree": shutil.rmtree, "exchange": getattr(utility, "_exchange", None)}
    seen = {"old": 0, "new": 0}
    k = 0
    while True:
        rel = _copy(rel_dir, tmp_path / f"k{k}" / "rel")
        calls = [0]

        def dying(name):
            def f(*a, **kw):
                calls[0] += 1
                if calls[0] > k:
                    raise _Killed(name)
                return real[name](*a, **kw)
            return f

        for name, (obj, attr) in {"replace": (os, "replace"), "rename": (os, "rename"), "link": (os, "link"),
                                  "copy2": (shutil, "copy2"), "rmtree": (shutil, "rmtree"),
                                  "exchange": (utility, "_exchange")}.items():
            monkeypatch.setattr(obj, attr, dying(name), raising=False)
        try:
            utility.add_utility(rel, report, report_file)
            finished = True
        except _Killed:
            finished = False
        monkeypatch.undo()
        if finished:
            break
        state = "old" if _verify(rel, old_id) == [] else "new" if _verify(rel, new_id) == [] else None
        assert state, (k, _verify(rel))
        seen[state] += 1
        assert utility.add_utility(rel, report, report_file) == new_id  # the next run finishes it
        assert _verify(rel, new_id) == [] and sorted(p.name for p in rel.parent.iterdir()) == ["rel"]
        k += 1
    assert seen["old"] > 5 and seen["new"] >= 1, seen  # crashes before and after the swap were both tried


def test_evaluate_release_without_an_atomic_swap_renames_aside(released, tmp_path, monkeypatch):
    """Where renameat2's exchange is missing, REL is renamed aside and the new folder renamed in."""
    from synthgen.release import utility

    rel_dir, old_id = released
    report_file = _utility_report(tmp_path)
    rel = _copy(rel_dir, tmp_path / "x" / "rel")
    monkeypatch.setattr(utility, "_exchange", lambda a, b: False)
    new_id = utility.add_utility(rel, json.loads(report_file.read_text()), report_file)
    assert new_id != old_id and _verify(rel, new_id) == [] and sorted(p.name for p in rel.parent.iterdir()) == ["rel"]

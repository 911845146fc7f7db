"""synthgen release / verify REL / rebuild: the remediation loop on a constructed leak.

The run: the dummy generator (6 classes x 5 images, 16 px), no alignment, shards, and an audit
with an embedding-level matcher double ("oracle"): it looks each image's pixels up in a table
the test fills, so the test decides which images look like which real person. Authentic set:
100 identities x 4 images (random pixels) whose embeddings cluster per identity, so the null
has 400 queries and the matcher separates identities (a valid audit). Each synthetic class is one
person (near its own centroid, 200 + class) nobody in the authentic set. Planted: two synthetic
images near authentic identities 5 and 7, and every image of synthetic class 000004 near
identity 9. Images the table does not know (re-rendered replacements) get a random embedding
("clean"), or one near identity 11 ("leak": every replacement is flagged again).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthgen.audit.matchers import REGISTRY
from synthgen.audit.matchers.base import ImageMatcher

DIM = 64
TABLE: dict[str, np.ndarray] = {}
ORACLE = {"unknown": "clean"}
LEAK_IMAGES = {"000001/000002.png": 5, "000003/000000.png": 7}
LEAK_CLASS, LEAK_CLASS_ID = "000004", 9


def _h(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img, np.uint8).tobytes()).hexdigest()


def _unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def _centroid(i: int) -> np.ndarray:
    return _unit(np.random.RandomState(1000 + i).randn(DIM))


def _near(i: int, salt: str) -> np.ndarray:
    rng = np.random.RandomState(int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16))
    return _unit(_centroid(i) + 0.3 * rng.randn(DIM) / np.sqrt(DIM))


class Oracle(ImageMatcher):
    name, input_size, id, weights_sha256 = "oracle", 16, "oracle-test", "0" * 64

    def embed(self, images):
        out = []
        for img in images:
            h = _h(img)
            if h in TABLE:
                out.append(TABLE[h])
            elif ORACLE["unknown"] == "leak":
                out.append(_near(11, h))
            else:
                out.append(_unit(np.random.RandomState(int(h[:8], 16)).randn(DIM)))
        return np.stack(out)


@pytest.fixture(autouse=True)
def _oracle(monkeypatch):
    monkeypatch.setitem(REGISTRY, "oracle", lambda w, a, d: Oracle())
    ORACLE["unknown"] = "clean"


def _png(path: Path, img: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _make_run(root: Path, tree: str = "raw", leaks: dict | None = None, c_dim: int = 6, consistent: bool = True,
              log=lambda *a: None, quality_first: bool = True, **sections):
    """generate -> (align) -> shard -> audit with the oracle; `leaks`: tree key -> authentic identity
    (default: the first image of classes 000001 and 000003). Returns (run, generator, leaks)."""
    from synthgen.generators import write_random_generator
    from synthgen.imageio import list_images, load_rgb
    from synthgen.pipeline import run_pipeline

    net = write_random_generator(root / "gen.json", "dummy", seed=0, c_dim=c_dim, resolution=16)
    auth = root / "authentic"
    rng = np.random.RandomState(0)
    for i in range(100):
        for j in range(4):
            img = rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)
            _png(auth / f"id{i:03d}" / f"{j}.png", img)
            TABLE[_h(img)] = _near(i, f"auth{i}-{j}")
    cfg = {"out": str(root / "run"), "generate": {"network": str(net), "per_class": 5, "seed": 0, "device": "cpu"},
           "align": {"enabled": False}, "shard": {"shard_size": 8},
           "audit": {"authentic": str(auth), "matcher": "oracle", "device": "cpu", "batch_size": 64}}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if k != "align" else v
    before = REGISTRY.get("oracle")
    REGISTRY["oracle"] = lambda w, a, d: Oracle()
    try:
        first = {**cfg, "shard": {"enabled": False}, "audit": {"enabled": False}}
        if not quality_first:  # quality would cache embeddings before the table knows the images
            first["quality"] = {"enabled": False}
        run_pipeline(first, progress=False, log=lambda *a: None)
        base = root / "run" / tree
        keys = list_images(base)
        if leaks is None:
            leaks = {next(k for k in keys if k.startswith("000001/")): 5, next(k for k in keys if k.startswith("000003/")): 7}
        for key in keys:
            img = load_rgb(base / key)
            if key in leaks:
                TABLE[_h(img)] = _near(leaks[key], key)
            elif key.startswith(LEAK_CLASS + "/"):
                TABLE[_h(img)] = _near(LEAK_CLASS_ID, key)
            elif consistent:  # each synthetic class one person, nobody in the authentic set (identities 0-99)
                TABLE[_h(img)] = _near(200 + int(key.split("/")[0]), key)
            else:  # every image a different person: classes that are not identities
                TABLE[_h(img)] = _unit(np.random.RandomState(int(_h(img)[:8], 16)).randn(DIM))
        run_pipeline(cfg, progress=False, log=log)
    finally:
        REGISTRY.pop("oracle", None)
        if before is not None:
            REGISTRY["oracle"] = before
    report = json.loads((root / "run" / "audit" / "report.json").read_text())
    assert report["verdict"]["status"] == "leak", report["verdict"]["reasons"]
    return root / "run", net, leaks


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    """(run folder, generator file): generate -> shard -> audit with planted leaks (no alignment)."""
    run, net, _ = _make_run(tmp_path_factory.mktemp("release"), leaks=LEAK_IMAGES)
    return run, net


def _release(run, out, **kw):
    from synthgen.release import release

    return release(run=str(run), out=str(out), progress=False, **kw)


def _quarantine(rel: Path) -> list[dict]:
    with open(rel / "quarantine.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_regenerate_replaces_flagged_images_keeps_class_sizes_and_certifies(audited_run, tmp_path):
    from synthgen.release import verify_release

    run, net = audited_run
    rel = tmp_path / "rel"
    r = _release(run, rel, formats="shards,imagefolder")
    assert r.status == "certified" and r["written"] and [x["status"] for x in r["rounds"]] == ["leak", "pass"]
    card = json.loads((rel / "card.json").read_text())
    assert card["certified"] and card["status"] == "certified"
    # exact class sizes for every kept class; the flagged identity removed as a whole class
    assert card["counts"]["per_class"] == {c: 5 for c in ("000000", "000001", "000002", "000003", "000005")}
    assert card["counts"]["removed_classes"] == [LEAK_CLASS]
    assert card["labels"] == {c: i for i, c in enumerate(["000000", "000001", "000002", "000003", "000005"])}
    q = _quarantine(rel)
    replaced = {row["key"]: row for row in q if row["action"] == "replaced"}
    assert set(replaced) == set(LEAK_IMAGES)
    assert replaced["000001/000002.png"]["replacement_key"] == "000001/000002-r1.png"
    assert float(replaced["000001/000002.png"]["p_value"]) < 1e-3 and replaced["000001/000002.png"]["nearest_authentic"].startswith("id005/")
    assert {row["key"] for row in q if row["action"] == "removed"} == {f"{LEAK_CLASS}/{i:06d}.png" for i in range(5)}
    assert all(row["round"] == "1" for row in q)
    assert verify_release(rel) == []
    assert not (rel / ".work").exists() and (rel / "imagefolder" / "000001" / "000002-r1.png").is_file()
    assert "Status: certified" in (rel / "DATASET_CARD.md").read_text()
    sums = (rel / "SHA256SUMS").read_text()
    assert "  card.json\n" in sums and "  quarantine.csv\n" in sums and "release.json" not in sums
    # a second invocation does nothing and says the same (whatever the order of --format)
    again = _release(run, rel, formats="imagefolder,shards")
    assert again.status == "certified" and (rel / "SHA256SUMS").read_text() == sums
    from synthgen.errors import UsageError

    with pytest.raises(UsageError, match="other settings"):  # the written card would say otherwise
        _release(run, rel, formats="shards,imagefolder", license="CC-BY-4.0")


def test_rebuild_from_the_card_is_byte_identical(audited_run, tmp_path):
    from synthgen.release import rebuild

    run, net = audited_run
    rel = tmp_path / "rel"
    _release(run, rel, formats="shards,imagefolder")
    r = rebuild(rel / "card.json", net, tmp_path / "rebuilt", progress=False)
    assert r["differ"] == [] and r["extra"] == [] and r["matched"] == r["files"] > 10
    # the wrong generator is refused before any work
    other = tmp_path / "other.json"
    other.write_text(Path(net).read_text().replace('"seed": 0', '"seed": 1'))
    res = CliRunner().invoke(_cli(), ["rebuild", str(rel / "card.json"), "--network", str(other), "--out",
                                      str(tmp_path / "x")])
    assert res.exit_code == 2 and "sha256 differs" in res.output and not (tmp_path / "x").exists()


def _cli():
    from synthgen.cli.main import cli

    return cli


def test_drop_policy_removes_and_keeps_labels_contiguous(audited_run, tmp_path):
    run, _ = audited_run
    rel = tmp_path / "rel"
    r = _release(run, rel, policy="drop")
    card = json.loads((rel / "card.json").read_text())
    assert r.status == "certified"
    assert card["counts"]["per_class"] == {"000000": 5, "000001": 4, "000002": 5, "000003": 4, "000005": 5}
    assert card["counts"]["replaced_images"] == 0 and card["counts"]["removed_images"] == 7
    from synthgen.data import ShardDataset

    ds = ShardDataset(rel / "shards", output="numpy")
    assert sorted(set(ds.targets)) == [0, 1, 2, 3, 4] and ds.classes == ["000000", "000001", "000002", "000003", "000005"]


def test_rounds_are_bounded_and_a_remaining_leak_writes_nothing(audited_run, tmp_path):
    ORACLE["unknown"] = "leak"  # every re-rendered image looks like a real person too
    run, _ = audited_run
    rel = tmp_path / "rel"
    res = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(rel), "--max-rounds", "2", "--quiet"])
    assert res.exit_code == 3, res.output
    assert "release: NOT WRITTEN: the final audit is leak" in res.output  # said even with --quiet
    assert not (rel / "card.json").exists() and not (rel / "SHA256SUMS").exists()
    assert sorted(p.name for p in (rel / "audit").iterdir()) == ["round-0", "round-1", "round-2"]
    assert json.loads((rel / "release.json").read_text())["status"] == "refused"
    res = CliRunner().invoke(_cli(), ["verify", str(rel)])
    assert res.exit_code == 1 and "this release was refused (final verdict 'leak')" in res.output
    # one more round on the same folder continues from the saved rounds instead of starting over
    first = (rel / "audit" / "round-1" / "report.json").stat().st_mtime_ns
    res = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(rel), "--max-rounds", "3", "--quiet"])
    assert res.exit_code == 3 and (rel / "audit" / "round-3").is_dir()
    assert (rel / "audit" / "round-1" / "report.json").stat().st_mtime_ns == first
    # --allow-inconclusive never releases a leak
    res = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(tmp_path / "rel2"), "--max-rounds", "1",
                                      "--allow-inconclusive", "--quiet"])
    assert res.exit_code == 3 and not (tmp_path / "rel2" / "card.json").exists()


def test_verify_catches_a_flipped_byte_and_a_quarantined_key_slipped_back(audited_run, tmp_path):
    from synthgen.release import verify_release
    from synthgen.release.verify import write_sums
    from synthgen.shards import shard

    run, _ = audited_run
    rel = tmp_path / "rel"
    _release(run, rel)
    bad = tmp_path / "flipped"
    shutil.copytree(rel, bad)
    p = sorted((bad / "shards").glob("shard-*.h5"))[0]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    problems = verify_release(bad)
    assert any(x.startswith(f"shards/{p.name}: sha256 differs from SHA256SUMS") for x in problems), problems
    assert any("checksum mismatch" in x for x in problems)  # the shard check names it too
    res = CliRunner().invoke(_cli(), ["verify", str(bad)])
    assert res.exit_code == 1 and f"FAIL shards/{p.name}: sha256 differs" in res.output
    # an extra data file, even re-summed, is not what the card describes
    extra = tmp_path / "extra"
    shutil.copytree(rel, extra)
    shutil.copy(sorted((extra / "shards").glob("shard-*.h5"))[0], extra / "shards" / "shard-09999.h5")
    write_sums(extra)
    assert any("shards/shard-09999.h5: a data file card.json does not list" in x for x in verify_release(extra))
    # put a quarantined image back and re-sum everything (a careless or dishonest edit)
    slipped = tmp_path / "slipped"
    shutil.copytree(rel, slipped)
    tree = tmp_path / "tree"
    shutil.copytree(run / "raw", tree, ignore=shutil.ignore_patterns("*.json", "*.jsonl"))
    shutil.rmtree(tree / LEAK_CLASS)
    shutil.rmtree(slipped / "shards")
    shard(inp=str(tree), out=str(slipped / "shards"), shard_size=8, progress=False)
    write_sums(slipped)
    problems = verify_release(slipped)
    assert any("2 quarantined keys are present" in x and "000001/000002.png" in x for x in problems), problems
    assert any("sha256 differs from card.json files" in x for x in problems)  # same counts: the keys give it away


def test_interrupted_release_resumes_to_the_same_bytes(audited_run, tmp_path, monkeypatch):
    from synthgen.audit import report as audit_report

    run, _ = audited_run
    ref = tmp_path / "ref"
    _release(run, ref)
    real = audit_report.run_audit

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(audit_report, "run_audit", boom)
    rel = tmp_path / "rel"
    with pytest.raises(KeyboardInterrupt):
        _release(run, rel)
    state = json.loads((rel / ".work" / "state.json").read_text())
    assert [r["audited"] for r in state["rounds"]] == [True, False]  # changes made, audit pending
    monkeypatch.setattr(audit_report, "run_audit", real)
    _release(run, rel)
    files = json.loads((rel / "card.json").read_text())["files"]
    assert files == json.loads((ref / "card.json").read_text())["files"] and len(files) > 3
    assert (rel / "quarantine.csv").read_bytes() == (ref / "quarantine.csv").read_bytes()


def test_release_errors_are_one_line(tmp_path):
    cli = _cli()
    res = CliRunner().invoke(cli, ["release", str(tmp_path), "--out", str(tmp_path / "rel")])
    assert res.exit_code == 1 and "raw/run.json: not found" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "rel").exists()
    res = CliRunner().invoke(cli, ["release", str(tmp_path), "--out", str(tmp_path / "r"), "--format", "shards,tiff"])
    assert res.exit_code == 2 and "--format" in res.output and "'tiff' is not one of" in res.output
    for n in ("-1", "0"):  # round 1 removes foreign images and re-audits subset audits: never skipped
        res = CliRunner().invoke(cli, ["release", str(tmp_path), "--out", str(tmp_path / "r"), "--max-rounds", n])
        assert res.exit_code == 2 and "--max-rounds" in res.output
    from synthgen.release.config import parse_formats

    assert parse_formats("parquet,shards,recordio") == parse_formats("recordio,parquet") == ["shards", "parquet",
                                                                                             "recordio"]


def test_release_inside_the_run_is_refused(audited_run):
    run, _ = audited_run
    res = CliRunner().invoke(_cli(), ["release", str(run), "--out", str(run / "shards" / "rel")])
    assert res.exit_code == 2 and "mix the release with the run" in res.output


def _items(**kw):
    return {k: {"slot": k, "class": int(k[:6]), "index": int(k[7:13]), "attempt": 0, **kw.get(k, {})}
            for k in ["000000/000000.png", "000000/000001.png", "000001/000000.png", "000002/000000.png",
                      "000003/000000.png"]}


def _row(kind, key, p=1e-6, matcher="m", auth="a/1.png"):
    return {"kind": kind, "synthetic": key, "score": 0.9, "p_value": p, "matcher": matcher, "authentic": auth}


def test_plan_round_rules():
    from synthgen.release.remediate import plan_round

    items = _items()
    items["000000/planted.png"] = {"slot": None, "class": None, "index": None, "attempt": 0}
    report = {"matchers": [{"matcher": {"name": "m"}, "collisions": {"pairs": [
        {"a": "000001", "b": "000002", "score": 0.8}, {"a": "000002", "b": "000003", "score": 0.7},
        {"a": "000000", "b": "000000", "score": 0.99}, {"a": "000000", "b": "000002", "score": "nan?"}]}}]}
    rows = [_row("image", "000000/000001.png", 1e-5, "m2"), _row("image", "000000/000001.png", 1e-7),
            _row("identity", "000001")]
    acts = {a["key"]: a for a in plan_round(items, rows, report, "regenerate", False, 2)}
    # identity 000001 flagged: its class goes, so its collision with 000002 is resolved; 000002-000003
    # collides: 000003 goes
    assert acts["000001/000000.png"]["op"] == "remove" and "identity flagged" in acts["000001/000000.png"]["reason"]
    assert acts["000003/000000.png"]["op"] == "remove" and "collision" in acts["000003/000000.png"]["reason"]
    assert "000002/000000.png" not in acts
    assert "000000/000000.png" not in acts  # a "pair" of one identity with itself, or without a score: ignored
    # a flagged generated image is re-rendered at the next attempt; the smallest p-value row is kept
    a = acts["000000/000001.png"]
    assert (a["op"], a["attempt"], a["p_value"], a["round"]) == ("replace", 1, 1e-7, 2)
    # an image with no generation record goes, flagged or not, unless kept
    assert acts["000000/planted.png"]["op"] == "remove" and "no generation record" in acts["000000/planted.png"]["reason"]
    assert "000000/planted.png" not in {a["key"] for a in plan_round(items, rows, report, "regenerate", True, 2)}
    # drop policy removes; a later attempt continues from the item's attempt
    assert plan_round(items, rows, report, "drop", True, 1)[0]["op"] == "remove"
    items2 = _items(**{"000000/000001.png": {"attempt": 3}})
    a = [x for x in plan_round(items2, rows[:2], {}, "regenerate", True, 1) if x["key"] == "000000/000001.png"][0]
    assert a["attempt"] == 4 and plan_round(items2, [], {}, "regenerate", True, 1) == []
    # a flagged class with a minority of its images flagged: those are replaced first and the next round
    # decides on the class (they may be what pulled its template); with half or more flagged, or with
    # drop, the class goes now
    three = {f"000005/{i:06d}.png": {"slot": f"s{i}", "class": 5, "index": i, "attempt": 0} for i in range(3)}
    rows5 = [_row("identity", "000005"), _row("image", "000005/000000.png")]
    assert {a["op"] for a in plan_round(three, rows5, {}, "regenerate", True, 1)} == {"replace"}
    assert len(plan_round(three, rows5, {}, "regenerate", True, 1)) == 1
    rows5.append(_row("image", "000005/000001.png"))
    assert [a["op"] for a in plan_round(three, rows5, {}, "regenerate", True, 1)] == ["remove"] * 3
    assert [a["op"] for a in plan_round(three, rows5[:2], {}, "drop", True, 1)] == ["remove"] * 3
    acts = plan_round(three, rows5[:2], {}, "regenerate", True, 1)
    assert [a.get("defers") for a in acts] == ["000005"]  # what the release records as deferred
    assert [a["op"] for a in plan_round(three, rows5[:2], {}, "regenerate", True, 2, {"000005"})] == ["remove"] * 3
    three["000005/000002.png"]["attempt"] = 1  # re-rendered by generate --align or a quality filter: still
    assert {a["op"] for a in plan_round(three, rows5[:2], {}, "regenerate", True, 1)} == {"replace"}  # deferred once


def test_replacement_seeds_are_generate_align_retry_seeds():
    from synthgen.rerender import replacement_key, retry_seeds
    from synthgen.seeding import derive_seed

    assert retry_seeds(7, 3, 5, 2, noise=True) == (derive_seed(7, 3, 5, "retry", 2),
                                                   derive_seed(7, 3, 5, "noise", "retry", 2))
    assert retry_seeds(7, 3, 5, 2, noise=False)[1] is None
    assert replacement_key("000003/000005.png", 2) == "000003/000005-r2.png"


def _parity_leaks(tmp_path) -> dict:
    """Two leaks for the parity-aligned run (10 per class), in two classes where parity keeps >= 5 images (so
    one leak does not make its whole class look like that person): the first is rejected by the
    parity detector at its first retry seed, the second accepted."""
    from synthgen.generation import GenerateConfig
    from synthgen.generation.planning import Item
    from synthgen.generation.rendering import render
    from synthgen.generators import load_generator, write_random_generator
    from synthgen.rerender import retry_seeds
    from synthgen.seeding import derive_seed

    net = write_random_generator(tmp_path / "probe.json", "dummy", seed=0, c_dim=6, resolution=16)
    G = load_generator(net)
    cfg = GenerateConfig(network=str(net), out=str(tmp_path / "unused"), noise_mode="random")

    def even(img):
        return int(img.astype(np.int64).sum()) % 2 == 0

    ok = {}
    for c in (0, 1, 2, 3, 5):
        for k in range(10):
            seed, nseed = retry_seeds(0, c, k, 1, True)
            a, b = render(G, [Item("a.png", c, k, derive_seed(0, c, k), derive_seed(0, c, k, "noise")),
                              Item("b.png", c, k, seed, nseed)], cfg)
            ok[c, k] = (even(a), even(b))
    full = [c for c in (0, 1, 2, 3, 5) if sum(ok[c, k][0] for k in range(10)) >= 5]
    first = next(((c, k) for c in full for k in range(10) if ok[c, k] == (True, False)), None)
    other = next(((c, k) for c in full for k in range(10) if ok[c, k] == (True, True) and first and c != first[0]), None)
    if first is None or other is None:
        pytest.fail(f"the probe found no suitable leaks: {ok}")
    return {f"{first[0]:06d}/{first[1]:06d}.png": 5, f"{other[0]:06d}/{other[1]:06d}.png": 7}


@pytest.mark.parametrize("mode", ["stage", "inline"])
def test_aligned_runs_replace_through_their_own_alignment_and_rebuild(tmp_path, monkeypatch, mode):
    """A separate align stage, or generate --align, with the parity detector double (a "face" in
    images with an even pixel sum): a replacement whose render has no face moves on to the next
    retry seed, as generate --align does, and the rebuild renders the recorded attempt."""
    from synthgen.alignment import DETECTORS, ParityDetector
    from synthgen.release import rebuild, verify_release

    if mode == "stage":
        sections = {"align": {"detector": "parity", "size": 16, "on_miss": "skip", "device": "cpu"}}
        leaks = _parity_leaks(tmp_path)
        # the dummy's 4x4 pattern upsampled has an even pixel sum; random noise makes parity vary
        run, net, leaks = _make_run(tmp_path, "aligned", leaks=leaks, generate={"noise_mode": "random", "per_class": 10},
                                    **sections)
    else:
        monkeypatch.setitem(DETECTORS, "mtcnn", ParityDetector)  # generate --align detects with "mtcnn"
        run, net, leaks = _make_run(tmp_path, "raw", generate={"align": True, "align_size": 16})
    rel = tmp_path / "rel"
    r = _release(run, rel)
    assert r.status == "certified", r["rounds"]
    rows = {q["key"]: q for q in _quarantine(rel) if q["action"] == "replaced"}
    assert set(rows) == set(leaks)
    card = json.loads((rel / "card.json").read_text())
    for op in card["remediation"]["operations"]:
        if op["op"] == "replace":
            assert op["new_key"].endswith(f"-r{op['attempt']}.png") and op["attempt"] >= 1 + len(op["skipped"])
    if mode == "stage":  # one leak has no "face" at its first retry seed: attempt 2 replaces it
        assert sorted(o["skipped"] for o in card["remediation"]["operations"] if o["op"] == "replace") == [[], [1]]
    assert verify_release(rel) == []
    rb = rebuild(rel / "card.json", net, tmp_path / "rebuilt", progress=False)
    assert rb["differ"] == [] and rb["matched"] == rb["files"]


def test_an_audit_of_a_subset_is_redone_in_full_before_anything_is_certified(audited_run, tmp_path, monkeypatch):
    """max_per_class audits the first N images per class: it vouches for nothing else, so the
    release re-audits every image even when that audit passed."""
    from synthgen.audit.report import AuditConfig, run_audit
    from synthgen.imageio import load_rgb

    run, _ = audited_run
    part = tmp_path / "run"
    shutil.copytree(run, part)
    cfg = json.loads((part / "audit" / "report.json").read_text())["config"]
    shutil.rmtree(part / "audit")
    hidden = {}  # while the subset is audited, the synthetic images look like nobody
    for p in sorted((part / "raw").rglob("*.png")):
        h = _h(load_rgb(p))
        hidden[h] = TABLE[h]
        monkeypatch.setitem(TABLE, h, _unit(np.random.RandomState(int(h[:8], 16)).randn(DIM)))
    rep = run_audit(AuditConfig(**{**cfg, "synthetic": str(part / "shards"), "out": str(part / "audit"),
                                   "cache_dir": str(tmp_path / "cache"), "max_per_class": 4, "progress": False}))
    assert rep["verdict"]["status"] == "pass" and rep["counts"]["synthetic_images"] == 24
    TABLE.update(hidden)
    shutil.rmtree(tmp_path / "cache")  # the release would reuse those (hidden) embeddings of the 24
    r = _release(part, tmp_path / "rel")
    assert [x["status"] for x in r["rounds"]] == ["pass", "leak", "pass"] and r.status == "certified", r.get("coverage_gap")
    last = json.loads((tmp_path / "rel" / r["rounds"][-1]["report"]).read_text())
    card = json.loads((tmp_path / "rel" / "card.json").read_text())
    assert last["config"]["max_per_class"] is None and last["counts"]["synthetic_images"] == card["counts"]["images"]
    assert card["counts"]["images"] > 24


def test_an_unreadable_synthetic_image_makes_the_audit_inconclusive(audited_run, tmp_path):
    """An image the audit could not read was not audited: like a NaN embedding, a hole that
    must never let the gate pass (or a release be certified)."""
    from synthgen.audit.report import AuditConfig, run_audit

    run, _ = audited_run
    tree = tmp_path / "tree"
    shutil.copytree(run / "raw", tree, ignore=shutil.ignore_patterns("*.json", "*.jsonl", LEAK_CLASS,
                                                                     *[k.split("/")[1] for k in LEAK_IMAGES]))
    (tree / "000000" / "000000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = json.loads((run / "audit" / "report.json").read_text())["config"]
    rep = run_audit(AuditConfig(**{**cfg, "synthetic": str(tree), "out": str(tmp_path / "a"), "cache_dir": None,
                                   "progress": False}))
    assert rep["verdict"]["status"] == "inconclusive"
    assert any("could not be read" in x and "000000/000000.png" in x for x in rep["verdict"]["reasons"])


def test_rebuild_refuses_a_hostile_card_before_any_work(tmp_path):
    from synthgen.errors import SynthgenError
    from synthgen.release import rebuild

    card = json.loads((Path(__file__).parents[1] / "docs" / "demo-card.json").read_text())
    net = tmp_path / "net.pt"
    net.write_bytes(b"not the generator")
    for change, msg in [(lambda c: c["remediation"]["operations"].append(
                            {"op": "replace", "key": "000000/000000.png", "slot": "../../../etc/x.png", "cls": 0,
                             "index": 0, "attempt": 1, "round": 1}), "slot"),
                        (lambda c: c["files"].update({"/etc/passwd": "0" * 64}), "files"),
                        (lambda c: c.update(formats=["shards", "../x"]), "formats"),
                        (lambda c: c["remediation"].update(operations="all"), "operations")]:
        c = json.loads(json.dumps(card))
        change(c)
        p = tmp_path / "card.json"
        p.write_text(json.dumps(c))
        with pytest.raises(SynthgenError, match=msg):
            rebuild(p, net, tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    p.write_text(json.dumps(card))
    with pytest.raises(SynthgenError, match="not an earlier rebuild"):
        rebuild(p, net, tmp_path / "mine", progress=False)
    with pytest.raises(SynthgenError, match="sha256 differs"):
        rebuild(p, net, tmp_path / "out", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and not (tmp_path / "out").exists()


def test_unconditional_views_are_dropped_not_rerendered(tmp_path):
    """USynthFace-style runs (an unconditional generator, several views per instance): a flagged
    view is removed (a re-rendered view would not be a view of the same instance), the rest is
    released, and the card rebuilds."""
    from synthgen.release import rebuild, verify_release

    run, net, leaks = _make_run(tmp_path, leaks={"0000001/01.png": 5}, c_dim=0,
                                generate={"count": 8, "views": 6, "noise_mode": "random"})  # 6 views: one
    # leaking view does not make its whole instance look like that person
    rel = tmp_path / "rel"
    r = _release(run, rel)
    assert r.status == "certified", r["rounds"]
    q = _quarantine(rel)
    assert [(x["key"], x["action"]) for x in q] == [("0000001/01.png", "removed")]
    assert "views of an unconditional instance are dropped" in q[0]["reason"]
    assert verify_release(rel) == []
    rb = rebuild(rel / "card.json", net, tmp_path / "rebuilt", progress=False)
    assert rb["differ"] == [] and rb["matched"] == rb["files"]


@pytest.mark.slow
def test_a_run_of_fallback_crops_is_never_certified(tmp_path, monkeypatch):
    """Issue 22: a run whose alignment found no face (100 % center-crop fallbacks: noise, not faces)
    was released as certified. The quality floor (release --min-detection-rate, default 99 %) now
    refuses to certify; with --allow-inconclusive it is written NOT CERTIFIED, saying why."""
    from synthgen.alignment import DETECTORS, ParityDetector
    from synthgen.release import verify_release

    class NoFace(ParityDetector):  # what MTCNN does on coloured noise
        name = "noface"

        def detect(self, images):
            return [None] * len(images)

    monkeypatch.setitem(DETECTORS, "noface", NoFace)
    sections = {"align": {"detector": "noface", "size": 16, "on_miss": "center-crop", "device": "cpu"}}
    run, net, _ = _make_run(tmp_path, "aligned", **sections)
    r = _release(run, tmp_path / "rel")
    assert not r["written"] and r["final_verdict"] == "inconclusive" and "real face detection" in r["coverage_gap"]
    r = _release(run, tmp_path / "rel", allow_inconclusive=True)
    card = json.loads((tmp_path / "rel" / "card.json").read_text())
    assert r["written"] and not card["certified"] and card["quality"]["measured"] and not card["quality"]["ok"]
    assert card["quality"]["rate"] < 0.99 and card["audit"]["final_verdict"] == "pass"
    assert any("real face detection" in w for w in card["not_certified_because"])
    assert "Quality floor:" in (tmp_path / "rel" / "DATASET_CARD.md").read_text()
    assert verify_release(tmp_path / "rel") == []
    r = _release(run, tmp_path / "rel2", min_detection_rate=0.0)  # the floor is the user's to state
    assert r["certified"]


@pytest.mark.slow
def test_rebuild_takes_a_template_file_from_the_card_not_from_the_path(tmp_path, monkeypatch):
    """Issue 21, item 3: a card's configs.align.config.template can be any path; rebuild opened it
    (and echoed a value from it). The template is data now: its points come from the card's
    alignment.template_points; the file is never opened, even when it is gone."""
    from synthgen.alignment import ARCFACE_112, DETECTORS, ParityDetector  # noqa: F401
    from synthgen.errors import SynthgenError
    from synthgen.release import rebuild

    tpl = tmp_path / "mytemplate.json"
    tpl.write_text(json.dumps({"size": 112, "points": np.asarray(ARCFACE_112).tolist()}))
    sections = {"align": {"detector": "parity", "size": 16, "on_miss": "skip", "device": "cpu", "template": str(tpl)}}
    (tmp_path / "r").mkdir()
    run, net, _ = _make_run(tmp_path / "r", "aligned", **sections)
    _release(run, tmp_path / "rel", allow_inconclusive=True)
    tpl.unlink()  # a rebuild elsewhere has no such file
    rb = rebuild(tmp_path / "rel" / "card.json", net, tmp_path / "rb", progress=False)
    assert rb["differ"] == [] and rb["matched"] == rb["files"]
    card = json.loads((tmp_path / "rel" / "card.json").read_text())
    card["configs"]["align"]["config"]["template"] = "/etc/passwd"
    card["alignment"]["template_points"] = None
    (tmp_path / "bad.json").write_text(json.dumps(card))
    with pytest.raises(SynthgenError, match="template_points must be 5 finite") as e:
        rebuild(tmp_path / "bad.json", net, tmp_path / "rb2", progress=False)
    assert "root:" not in str(e.value)


@pytest.mark.slow  # an audited run and a release (~5 s)
def test_the_runs_quality_report_is_in_the_card_and_bound(audited_run, tmp_path):
    """Issue 22 item 4: a run with a [quality] stage says what its data is in the card (detection,
    pose, sharpness, identity), with the report copied into REL and bound; editing it is caught."""
    import shutil

    from synthgen.quality.stage import quality
    from synthgen.release import verify_release

    run = tmp_path / "run"
    shutil.copytree(audited_run[0], run)
    quality(inp=str(run / "raw"), out=str(run / "quality"), matcher="pixels", device="cpu", progress=False)
    rel = tmp_path / "rel"
    _release(run, rel, formats="shards")
    card = json.loads((rel / "card.json").read_text())
    dq = card["data_quality"]
    assert dq["images"] == 30 and dq["matcher"] == "pixels" and dq["report"] == "quality/report.json"
    assert dq["consistency_mean"]["p50"] is not None and "before remediation" in dq["measured_on"]
    assert card["bound"]["quality/report.json"] == dq["report_sha256"]
    assert "## Data quality" in (rel / "DATASET_CARD.md").read_text()
    assert verify_release(rel) == []
    (rel / "quality" / "report.json").write_text((rel / "quality" / "report.json").read_text().replace("pixels", "dlib"))
    assert verify_release(rel)  # the edit is caught


@pytest.mark.slow  # a release (~5 s)
def test_older_cards_and_tampered_data_quality(audited_run, tmp_path):
    """A card written before data_quality existed renders (and verifies) as it did; a tampered
    data_quality is a verify problem line, not a crash; a malformed RUN/quality/report.json is refused
    in one line before any work."""
    from synthgen.errors import DataError
    from synthgen.release.card import card_markdown, card_problems, read_quality_report

    rel = tmp_path / "rel"
    _release(audited_run[0], rel, formats="shards")
    card = json.loads((rel / "card.json").read_text())
    assert card["data_quality"] is None and "## Data quality" in card_markdown(card)
    old = {k: v for k, v in card.items() if k != "data_quality"}
    assert "## Data quality" not in card_markdown(old) and not card_problems(old)
    for bad in ({"images": "x"}, ["a"], {"images": 1, "classes": 1}):
        assert any("data_quality" in p for p in card_problems({**card, "data_quality": bad}))
    run = tmp_path / "run"
    (run / "quality").mkdir(parents=True)
    for text in ('{"summary": [1]}', '{"summary": {"images": "3", "classes": 1}}', '{"summary": {"images": 1, '
                 '"classes": 1}, "matcher": "dlib"}', "[" * 100000 + "]" * 100000, "not json"):
        (run / "quality" / "report.json").write_text(text)
        with pytest.raises(DataError, match="not a synthgen quality report"):
            read_quality_report(run)
    (run / "quality" / "report.json").unlink()
    (run / "quality" / "report.json").symlink_to("/etc/hostname")
    with pytest.raises(DataError, match="plain file"):
        read_quality_report(run)


@pytest.mark.slow  # two runs with alignment, a release and a rebuild each (~10 s)
@pytest.mark.parametrize("policy", ["regenerate", "drop"])
def test_quality_filters_apply_before_sharding_and_rebuild_replays_them(tmp_path, policy):
    """Issue 22 item 2: [quality] filters are applied before sharding. With the parity detector and
    on_miss center-crop, about half the renders are fallback crops; `no_fallback` drops them. With
    regenerate each is re-rendered from its next retry seed until one passes (class sizes exact);
    with drop they go. The decisions are round-0 operations in the card, quarantine.csv lists them,
    and rebuild replays them byte for byte."""
    from synthgen.contract import MANIFEST
    from synthgen.release import rebuild, verify_release
    from synthgen.shards.plan import manifest_records

    sections = {"align": {"detector": "parity", "size": 16, "on_miss": "center-crop", "device": "cpu"},
                "quality": {"enabled": True, "matcher": "none", "no_fallback": True, "policy": policy, "device": "cpu"}}
    run, net, _ = _make_run(tmp_path, "filtered", generate={"noise_mode": "random", "per_class": 5}, **sections)
    aligned = manifest_records(run / "aligned")
    fallbacks = {k for k, r in aligned.items() if r.get("fallback")}
    assert 5 <= len(fallbacks) <= 25  # the parity double: about half
    meta = json.loads((run / "filtered" / "filtered.json").read_text())
    recs = manifest_records(run / "filtered")
    assert not any(r.get("fallback") for r in recs.values()) and (run / "filtered" / MANIFEST).is_file()
    per_class = {}
    for k in recs:
        per_class[k.split("/")[0]] = per_class.get(k.split("/")[0], 0) + 1
    index = json.loads((run / "shards" / "index.json").read_text())
    assert index["total"] == len(recs)
    ops = meta["ops"]
    assert {o["key"] for o in ops} == fallbacks  # every dropped image, and nothing else, has an operation
    if policy == "regenerate":
        assert per_class == {f"{c:06d}": 5 for c in range(6)} and all(o["op"] == "replace" for o in ops)
        assert all(o["new_key"] in recs and recs[o["new_key"]]["replaces"] == o["slot"] for o in ops)
    else:
        assert len(recs) == 30 - len(fallbacks) and all(o["op"] == "remove" for o in ops)
    rel = tmp_path / "rel"
    r = _release(run, rel)
    assert r.status == "certified", r["rounds"]
    card = json.loads((rel / "card.json").read_text())
    round0 = [o for o in card["remediation"]["operations"] if o["round"] == 0]
    assert sorted(o["key"] for o in round0) == sorted(fallbacks)
    assert card["counts"]["original_images"] == 30 and card["quality"]["detected"] == card["quality"]["images"]
    z, sizes = card["quality"]["class_sizes"], list(card["counts"]["per_class"].values())
    assert z["planned"] == 5 and (z["min"], z["max"]) == (min(sizes), max(sizes))
    assert z["classes_short"] == sum(v < 5 for v in sizes) and (z["classes_short"] == 0) == (policy == "regenerate")
    q0 = [row for row in _quarantine(rel) if row["round"] == "0"]
    assert len(q0) == len(fallbacks) and all("quality filter no_fallback" in row["reason"] for row in q0)
    assert verify_release(rel) == []
    rb = rebuild(rel / "card.json", net, tmp_path / "rebuilt", progress=False)
    assert rb["differ"] == [] and rb["matched"] == rb["files"]


@pytest.mark.slow  # a run and two releases (~8 s)
def test_classes_that_are_not_identities_are_never_certified(tmp_path):
    """Issue 22 item 3: the quality floor includes identity consistency. When every synthetic image
    is a different person (a generator whose labels do not control identity), the audit can pass
    (nobody leaks) but the release is refused with the measured rate and the floor; the floor is the
    user's to state (0 turns it off), and the card records it."""
    from synthgen.release.card import card_markdown

    run, _, _ = _make_run(tmp_path, consistent=False)
    r = _release(run, tmp_path / "rel")
    assert r.status == "refused" and r["final_verdict"] == "inconclusive" and [x["status"] for x in r["rounds"]][-1] == "pass"
    assert "synthetic same-class image pairs verify as one person with oracle" in r["coverage_gap"]
    assert "identity-consistency floor is 50 %" in r["coverage_gap"]
    r = _release(run, tmp_path / "rel2", min_consistency_rate=0.0)
    card = json.loads((tmp_path / "rel2" / "card.json").read_text())
    c = card["quality"]["consistency"]
    assert r.status == "certified" and c["measured"] and c["ok"] and c["floor"] == 0.0 and c["matchers"][0]["rate"] < 0.2
    assert "Identity consistency: synthetic same-class image pairs" in card_markdown(card)


def test_consistency_floor_reads_every_matcher_and_old_reports():
    """The floor takes each matcher's synthetic_same_class_verified; a report written before the
    measure existed is 'not measured' (and does not block); a tampered card.quality.consistency is a
    verify problem line."""
    from synthgen.release.card import card_problems
    from synthgen.release.floor import consistency_floor

    def m(name, rate):
        return {"matcher": {"name": name}, "same_label": {"synthetic_same_class_verified": {
            "rate": rate, "ci95": [max(rate - 0.1, 0), min(rate + 0.1, 1)], "pairs": 100, "threshold": 0.4}}}

    c = consistency_floor({"matchers": [m("dlib", 0.9), m("facenet-casia", 0.3)]}, 0.5)
    assert c["measured"] and not c["ok"] and "with facenet-casia" in c["why"] and "30 %" in c["why"]
    assert consistency_floor({"matchers": [m("dlib", 0.9)]}, 0.5)["ok"]
    old = consistency_floor({"matchers": [{"matcher": {"name": "dlib"}, "same_label": {}}]}, 0.5)
    assert old["ok"] and not old["measured"] and "older synthgen" in old["note"]
    single = consistency_floor({"matchers": [{"matcher": {"name": "dlib"}, "same_label": {
        "synthetic_same_class_verified": {"rate": None, "ci95": None, "pairs": 0, "threshold": 0.4}}}]}, 0.5)
    assert single["ok"] and not single["measured"] and "no synthetic class has two images" in single["note"]
    card = {"quality": {"measured": False, "ok": True, "consistency": {"measured": True, "ok": True, "floor": 0.5,
                                                                       "matchers": [{"rate": "0.9"}]}}}
    assert any("quality.consistency" in p for p in card_problems(card))


@pytest.mark.slow  # a run with alignment (~6 s)
def test_a_class_the_filters_cannot_fill_goes_whole(tmp_path, monkeypatch):
    """With one re-rendering allowed per dropped image, a slot whose replacement is a fallback crop
    again cannot be filled: its class is dropped whole (every image a remove operation saying why),
    and every class left keeps its exact size."""
    from synthgen.quality import apply as QA
    from synthgen.shards.plan import manifest_records

    monkeypatch.setattr(QA, "MAX_ATTEMPTS", 1)
    sections = {"align": {"detector": "parity", "size": 16, "on_miss": "center-crop", "device": "cpu"},
                "quality": {"enabled": True, "matcher": "none", "no_fallback": True, "device": "cpu"}}
    run, _, _ = _make_run(tmp_path, "filtered", generate={"noise_mode": "random", "per_class": 5}, **sections)
    meta = json.loads((run / "filtered" / "filtered.json").read_text())
    gone = meta["summary"]["classes_dropped"]
    assert gone, "the parity double should leave at least one slot unfilled at one attempt"
    per_class = {}
    for k in manifest_records(run / "filtered"):
        per_class[k.split("/")[0]] = per_class.get(k.split("/")[0], 0) + 1
    assert set(per_class).isdisjoint(gone) and set(per_class.values()) == {5}
    for c in gone:
        ops = [o for o in meta["ops"] if o["key"].startswith(c + "/")]
        assert len(ops) == 5 and all(o["op"] == "remove" for o in ops)
        assert any("cannot be filled" in o["reason"] for o in ops)


@pytest.mark.slow  # a run with [quality] and an audit (~5 s)
def test_the_audit_of_a_run_reuses_qualitys_embeddings(tmp_path):
    """Inside `synthgen run`, [quality] embeds the crops and the audit the shards built from them:
    with a lossless shard encoding the audit takes quality's cached embeddings and embeds none of
    the synthetic images again (only the authentic set)."""
    calls = []

    class Counting(Oracle):
        def embed(self, images):
            calls.extend(_h(im) for im in images)
            return super().embed(images)

    REGISTRY["counting"] = lambda w, a, d: Counting()
    try:
        logs = []
        run, _, _ = _make_run(tmp_path, "aligned", quality={"enabled": True, "matcher": "counting", "device": "cpu"},
                              align={"detector": "parity", "size": 16, "on_miss": "center-crop", "device": "cpu"},
                              audit={"matcher": "counting"}, log=logs.append, quality_first=False)
    finally:
        REGISTRY.pop("counting", None)
    assert any("30 embeddings taken from [quality]'s cache" in line for line in logs), logs
    from synthgen.audit.embed import ImageSet

    shards = ImageSet(run / "shards")
    synthetic = {_h(shards.read(i)) for i in range(len(shards.keys))}
    assert len(synthetic) == 30 and sum(c in synthetic for c in calls) == 30  # each embedded once, by quality


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory):
    """(run, generator): parity detector with center-crop fallbacks, [quality] no_fallback, regenerate."""
    sections = {"align": {"detector": "parity", "size": 16, "on_miss": "center-crop", "device": "cpu"},
                "quality": {"enabled": True, "matcher": "none", "no_fallback": True, "device": "cpu"}}
    run, net, _ = _make_run(tmp_path_factory.mktemp("filtered"), "filtered",
                            generate={"noise_mode": "random", "per_class": 5}, **sections)
    return run, net


@pytest.mark.slow  # copies of a filtered run, each refused before any work (~3 s)
def test_a_release_refuses_shards_its_filtered_images_no_longer_explain(filtered_run, tmp_path):
    """Red team F1/F6: the shards came from RUN/filtered; without it (deleted by a failed re-apply,
    or never finished) or with a filtered.json that does not describe the tree, the release refuses
    in one line instead of certifying a card that forgot the round-0 operations."""
    from synthgen.errors import DataError

    run, _ = filtered_run
    meta = json.loads((run / "filtered" / "filtered.json").read_text())

    def variant(name, edit):
        r = tmp_path / name
        shutil.copytree(run, r)
        edit(r)
        with pytest.raises(DataError) as e:
            _release(r, tmp_path / f"rel-{name}")
        assert "\n" not in str(e.value) and not (tmp_path / f"rel-{name}" / "card.json").exists()
        return str(e.value)

    assert "were not built from the run's quality-filtered images" in variant(
        "gone", lambda r: shutil.rmtree(r / "filtered"))
    assert "were not built from" in variant("partial", lambda r: (r / "filtered" / "filtered.json").unlink())
    for name, ops, want in (("emptyops", [], "disagree"),
                            ("ghost", meta["ops"] + [{"round": 0, "op": "remove", "key": "000000/nobody.png"}],
                             "not an image of the run"),
                            ("traversal", [{"round": 0, "op": "remove", "key": "../../etc/passwd"}], "not an image"),
                            ("twice", meta["ops"] + meta["ops"][:1], "listed twice"),
                            ("nokey", [{"op": "remove"}], "must be a remove or replace object")):
        assert want in variant(name, lambda r: (r / "filtered" / "filtered.json").write_text(
            json.dumps(dict(meta, ops=ops))))
    assert "is not a filter" in variant("badthr", lambda r: (r / "filtered" / "filtered.json").write_text(
        json.dumps(dict(meta, thresholds={"bogus": 1}))))
    # new user: the policy changed, RUN/filtered was re-made and the shards refused it: the shards are
    # not of these filtered images (the card would list replacements the release does not hold)
    assert "built from other quality-filtered images" in variant("stale", lambda r: (r / "filtered" / "filtered.json")
                                                                 .write_text(json.dumps(dict(meta, config_hash="0" * 64))))


@pytest.mark.slow  # re-runs of a filtered run (~20 s)
def test_changed_filters_or_alignment_remake_everything_downstream(filtered_run, tmp_path):
    """Red team F2/F3/F7 and review: other filters, another alignment or another generate config
    re-make everything after them (the shards too, where the keys stay the same but the pixels do
    not; a stage made from another input asks for --overwrite first); a setting that changes no
    output (a batch size) re-makes nothing; a decisions.csv that does not list the run's images is
    refused in one line."""
    from synthgen.audit.embed import ImageSet
    from synthgen.errors import DataError, UsageError
    from synthgen.imageio import load_rgb
    from synthgen.pipeline import run_pipeline
    from synthgen.quality.apply import apply_to_run
    from synthgen.quality.config import QualityConfig
    from synthgen.quality.stage import read_decisions

    run0, _ = filtered_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    cfg = json.loads((run / "run.json").read_text())["config"]
    cfg["out"] = str(run)
    logs = []

    def same_pixels():
        shards = ImageSet(run / "shards")
        return all(np.array_equal(shards.read(i), load_rgb(run / "filtered" / k)) for i, k in enumerate(shards.keys))

    REGISTRY["oracle"] = lambda w, a, d: Oracle()
    try:
        cfg["quality"]["policy"] = "drop"
        with pytest.raises(UsageError, match="holds images filtered with other decisions or another policy"):
            run_pipeline(cfg, progress=False, log=lambda *a: None)
        run_pipeline(cfg, progress=False, log=lambda *a: None, overwrite=True)
        report = json.loads((run / "audit" / "report.json").read_text())
        assert report["counts"]["synthetic_images"] == json.loads((run / "shards" / "index.json").read_text())["total"] < 30
        cfg["align"]["batch_size"] = 3  # changes no output: nothing downstream is made again
        run_pipeline(cfg, progress=False, log=logs.append)
        assert "[audit] complete for this config, skipped" in logs and "[shard] complete for this config, skipped" in logs
        cfg["align"]["template"] = "arcface-shift8"  # same keys, other pixels
        run_pipeline(cfg, progress=False, log=lambda *a: None, overwrite=True)
        assert same_pixels()
        before = load_rgb(run / "aligned" / "000000" / "000000.png") if (run / "aligned" / "000000" / "000000.png").is_file() else None
        cfg["generate"]["seed"] = 1  # other images: align (which resumes by name) starts again
        run_pipeline(cfg, progress=False, log=lambda *a: None, overwrite=True)
        assert same_pixels()
        from synthgen.shards.plan import manifest_records

        gen = manifest_records(run / "raw")
        for k, r in manifest_records(run / "aligned").items():  # every crop is of the new raw image
            assert r["source"] in gen
        after = run / "aligned" / "000000" / "000000.png"
        assert before is None or not after.is_file() or not np.array_equal(before, load_rgb(after))
    finally:
        REGISTRY.pop("oracle", None)
    rows = read_decisions(run / "quality")
    qcfg = QualityConfig(inp=str(run / "aligned"), out=str(run / "quality"), matcher="none", no_fallback=True)
    with pytest.raises(DataError, match="does not list exactly the run's images"):
        apply_to_run(run, qcfg, rows[1:], None, None)


@pytest.mark.slow  # a run and a release (~8 s)
def test_verify_recomputes_the_consistency_floor_from_the_final_report(tmp_path):
    """Red team F5: a NOT CERTIFIED release (classes that are not identities) whose card is edited to
    say the floor was met and the data certified, with DATASET_CARD.md and SHA256SUMS rewritten to
    match, fails verify: the rates and the verdict follow from the bound final report."""
    from synthgen.release import verify_release
    from synthgen.release.card import card_markdown
    from synthgen.release.verify import write_sums

    run, _, _ = _make_run(tmp_path, consistent=False)
    rel = tmp_path / "rel"
    r = _release(run, rel, allow_inconclusive=True)
    assert r.status == "not-certified" and verify_release(rel) == []
    res = CliRunner().invoke(_cli(), ["verify", str(rel)])  # intact is not certified: verify says which
    assert res.exit_code == 0 and "its card says NOT CERTIFIED" in res.output
    card = json.loads((rel / "card.json").read_text())
    card["quality"]["consistency"]["ok"] = card["quality"]["ok"] = card["certified"] = True
    card["status"], card["not_certified_because"] = "certified", []
    (rel / "card.json").write_text(json.dumps(card, indent=1))
    (rel / "DATASET_CARD.md").write_text(card_markdown(card))
    write_sums(rel)
    problems = verify_release(rel)
    assert any("quality.consistency does not follow from the final audit report" in p for p in problems), problems
    assert "NOT met" in (rel / "DATASET_CARD.md").read_text()  # the line says what the numbers say

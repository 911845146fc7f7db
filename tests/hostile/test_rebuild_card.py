"""Issue 21, item 3: nothing a card says is trusted before it is checked.

A 13 KB card with a huge forward_chunk, seeds range or per_class drove `rebuild` past 4.8 GB:
nothing tied the card's generate config to its own counts. Each crafted card below is refused by
`rebuild CARD` in one line (exit 1) naming the card field and what was expected, before anything
is generated or written. The base card is the demo's (docs/demo-card.json), pointed at the micro
fixture network (4 classes) so that, without the checks, rebuild would really start rendering.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import MICRO
from hostile_util import one_error_line

ROOT = Path(__file__).resolve().parents[2]
NET = MICRO / "network-scrubbed-p4.pkl"


def _base() -> dict:
    from synthgen.fsutil import sha256_file

    card = json.loads((ROOT / "docs" / "demo-card.json").read_text())
    sha = sha256_file(NET)
    card["generator"].update(sha256=sha, c_dim=4, resolution=16)
    card["configs"]["generate"]["identity"]["network_sha256"] = sha
    card["rebuild"]["must_match"]["generator_sha256"] = sha
    return card


def _rebuild(tmp_path, card: dict):
    from synthgen.cli.main import cli

    p = tmp_path / "card.json"
    p.write_text(json.dumps(card))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["rebuild", str(p), "--network", str(NET), "--out", str(out), "--quiet"])
    return r, out


def _gen(card):
    return card["configs"]["generate"]["config"]


def _chunk(card, v):
    _gen(card)["chunk_size"] = v
    card["configs"]["generate"]["identity"]["forward_chunk"] = v
    card["rebuild"]["must_match"]["forward_chunk"] = v


CASES = {
    # the attack's three numbers
    "huge forward_chunk": (lambda c: _chunk(c, 10**8), "forward_chunk", "8,192"),
    # bounded and self-consistent, but every network call renders (and pads to) the whole chunk
    "forward_chunk over the run": (lambda c: _chunk(c, 8192), "forward_chunk", "at most 256 (the run's 24 images"),
    "huge per_class": (lambda c: _gen(c).update(per_class=10**7), "configs.generate.config.per_class",
                       "counts.original_images"),
    "per_class over its counts": (lambda c: _gen(c).update(per_class=13), "per_class", "at most 51 images"),
    "seeds range over its counts": (lambda c: _gen(c).update(seeds="0-999999"), "configs.generate.config.seeds",
                                    "4 classes x 1,000,000"),
    "seeds beyond 32 bits": (lambda c: _gen(c).update(seeds="0-4294967296"), "seeds", "values up to"),
    "huge seed_pool": (lambda c: _gen(c).update(seed_pool="0-4000000000"), "seed_pool", "at most 1,000,000"),
    "classes beyond c_dim": (lambda c: _gen(c).update(classes="0-99999999"), "classes", "values up to 3"),
    "huge max_retries": (lambda c: _gen(c).update(max_retries=10**9), "max_retries", "0 to 100"),
    # negative numbers and non-integers
    "negative per_class": (lambda c: _gen(c).update(per_class=-6), "per_class", "an integer from 1"),
    "float per_class": (lambda c: _gen(c).update(per_class=6.5), "per_class", "an integer"),
    "string per_class": (lambda c: _gen(c).update(per_class="6"), "per_class", "an integer"),
    "bool forward_chunk": (lambda c: _chunk(c, True), "forward_chunk", "an integer"),
    "negative forward_chunk": (lambda c: _chunk(c, -16), "forward_chunk", "an integer from 1"),
    "negative images": (lambda c: c["counts"].update(images=-30), "counts.images", "an integer from 0"),
    "float original_images": (lambda c: c["counts"].update(original_images=51.0), "counts.original_images",
                              "an integer"),
    "negative seed": (lambda c: _gen(c).update(seed=-1), "configs.generate.config.seed", ">= 0"),
    "float psi string": (lambda c: _gen(c).update(psi="1"), "configs.generate.config.psi", "number"),
    "huge align size": (lambda c: c["configs"]["align"]["config"].update(size=10**6), "configs.align.config.size",
                        "16 to 4,096"),
    # counts that disagree with each other, with the lists, and with must_match
    "images not the sum of per_class": (lambda c: c["counts"].update(images=31), "counts.images", "sum of"),
    "original_images inflated": (lambda c: c["counts"].update(original_images=10**8), "counts.original_images",
                                 "images + removed_images (51)"),
    "removed count not the operations": (lambda c: c["counts"].update(removed_images=20), "counts.removed_images",
                                         "21 remove operations"),
    "classes not the labels": (lambda c: c["counts"].update(classes=6), "counts.classes", "labels"),
    "shards not the counts": (lambda c: c["configs"]["shard"]["config"].update(shard_size=1), "files",
                              "30 (counts.images 30 in shards of 1)"),
    "must_match forward_chunk": (lambda c: c["rebuild"]["must_match"].update(forward_chunk=256),
                                 "rebuild.must_match.forward_chunk", "identity.forward_chunk (16)"),
    "must_match generator": (lambda c: c["rebuild"]["must_match"].update(generator_sha256="0" * 64),
                             "rebuild.must_match.generator_sha256", "generator.sha256"),
    "must_match device": (lambda c: c["rebuild"]["must_match"].update(device_type="cuda"),
                          "rebuild.must_match.device_type", "device_type ('cpu')"),
    "identity chunk not the default": (lambda c: [c["configs"]["generate"]["identity"].update(forward_chunk=64),
                                                  c["rebuild"]["must_match"].update(forward_chunk=64)],
                                       "identity.forward_chunk", "16 (the cpu default"),
    "shard size not the crop": (lambda c: c["configs"]["shard"].update(image_size=[4096, 4096]),
                                "configs.shard.image_size", "[112, 112]"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_crafted_cards_are_refused_before_anything_is_generated(tmp_path, name):
    edit, field, expected = CASES[name]
    card = _base()
    edit(card)
    r, out = _rebuild(tmp_path, card)
    assert r.exit_code == 1, (r.exit_code, r.stderr[-1000:])
    one_error_line(r.stderr, field, expected, "expected")
    assert not out.exists(), "rebuild wrote before refusing"


def test_the_base_card_passes_the_checks():
    """The checks refuse the crafted cards, not the demo's own card (re-pointed at the micro net)."""
    from synthgen.release.rebuilder import _check_configs

    _check_configs(_base(), Path("card.json"))
    _check_configs(json.loads((ROOT / "docs" / "demo-card.json").read_text()), Path("card.json"))


def test_a_card_that_understates_its_generators_classes_is_refused(tmp_path):
    """classes 'all' plans c_dim classes: the card's c_dim was what bounded the plan, so it must be the
    network's (the micro net has 4 classes; a card saying 2 would have let per_class double)."""
    card = _base()
    card["generator"]["c_dim"] = 2
    _gen(card)["per_class"] = 12  # 2 x 12 = 24 passes the card's own bound; the network would make 48
    r, out = _rebuild(tmp_path, card)
    assert r.exit_code == 1, r.stderr
    one_error_line(r.stderr, "generator.c_dim is 2", "has 4")
    assert not (out / ".work").exists()

"""SHA256SUMS, and `synthgen verify REL`: is this release exactly what its card says?"""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.fsutil import atomic_write_text, sha256_file
from synthgen.safepath import NotARegularFile, path_problem, read_inside, sha256_inside, show, show_path

SUMS = "SHA256SUMS"
UNSUMMED = {SUMS, "release.json"}  # the sums themselves and the stage marker (bookkeeping)
TEXT_LIMIT = 1 << 30  # card.json, SHA256SUMS, reports: read whole, never more than this

# Every file verify reads is opened inside REL without following links, checked to be a regular
# file on the open descriptor and read with a size limit (safepath.open_inside): a FIFO never
# blocks it, a link to /dev/zero or outside REL is never read.


def _text(root: Path, rel: str) -> str:
    """root/rel as UTF-8 text; NotARegularFile, OSError or UnicodeDecodeError when it cannot be."""
    return read_inside(root, rel, TEXT_LIMIT).decode("utf-8")


def _sha(root: Path, rel: str) -> str | None:
    """sha256 of root/rel, or None when it is not a plain file inside root (or unreadable)."""
    try:
        return sha256_inside(root, rel)
    except (NotARegularFile, OSError):
        return None


def _listed(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.is_symlink()
                  and p.relative_to(out).parts[0] not in (".work",) and p.relative_to(out).as_posix() not in UNSUMMED)


def write_sums(out: Path) -> None:
    """`sha256sum -c`-compatible list of every file of the release (sorted paths)."""
    lines = [f"{sha256_file(p)}  {p.relative_to(out).as_posix()}\n" for p in _listed(out)]
    atomic_write_text(out / SUMS, "".join(lines))


def is_release(path) -> bool:
    """A release folder: written (SHA256SUMS + card.json) or started (release.json)."""
    p = Path(path)
    return ((p / SUMS).is_file() and (p / "card.json").is_file()) or (p / "release.json").is_file()


def release_id(root) -> str:
    """A release's id: the sha256 of its card.json, to which every other file is bound."""
    return sha256_inside(Path(root), "card.json")


def verify_release(root, expect: str | None = None) -> list[str]:
    """One line per problem (empty: the release is intact and, with `expect`, is the release that
    id names): SHA256SUMS, every file bound to card.json (data files, reports, quarantine.csv),
    DATASET_CARD.md regenerated from the card, the released pixels against the final audit's, the
    shards, the card's counts, quarantined keys."""
    root = Path(root)
    problems = []
    if expect is not None:
        try:
            have = release_id(root)
        except (NotARegularFile, OSError):
            have = None
        if have != expect.strip().lower():
            problems.append(f"card.json: sha256 {have}, not the expected release id {show(expect[:80])}: this is not "
                            "the release that id names (a file was changed, or it is another release)")
    sums = root / SUMS
    if not sums.is_file() and not sums.is_symlink() and not sums.exists() and (root / "release.json").is_file():
        try:
            m = json.loads(_text(root, "release.json"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError, NotARegularFile):
            m = {}
        m = m if isinstance(m, dict) else {}
        if m.get("status") == "refused":
            return [f"release.json: this release was refused (final verdict {show(str(m.get('verdict')))}): no data "
                    "was written, only audit/ and the working state"]
        return ["release.json: this release is not finished (no SHA256SUMS); rerun the same `synthgen release`"]
    try:
        text = _text(root, SUMS)
    except NotARegularFile as e:
        return [f"{show_path(sums)}: {show(str(e))}; a release holds plain files only"]
    except (OSError, UnicodeDecodeError) as e:
        return [f"{show_path(sums)}: unreadable ({type(e).__name__}); the release is incomplete"]
    listed = {}
    for n, line in enumerate(text.splitlines(), 1):
        sha, sep, rel = line.partition("  ")
        bad = path_problem(rel) if sep else "not '<sha256>  <path>'"
        if bad or len(sha) != 64:
            problems.append(f"{SUMS}:{n}: {bad or 'not a sha256'}: {show(line[:120])}")
            continue
        if rel in listed:
            problems.append(f"{SUMS}:{n}: {show(rel)} is listed twice")
            continue
        listed[rel] = sha
    for rel, sha in sorted(listed.items()):
        try:
            if sha256_inside(root, rel) != sha:
                problems.append(f"{show_path(rel)}: sha256 differs from {SUMS} (the file was changed or damaged)")
        except FileNotFoundError:
            problems.append(f"{show_path(rel)}: listed in {SUMS} but missing")
        except NotARegularFile as e:
            problems.append(f"{show(str(e))}: listed in {SUMS}; a release holds plain files only")
        except OSError as e:
            problems.append(f"{show_path(rel)}: unreadable ({e.strerror or type(e).__name__})")
    for p in _listed(root):
        rel = p.relative_to(root).as_posix()
        if rel not in listed:
            problems.append(f"{show_path(rel)}: not listed in {SUMS} (added after the release was written)")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            problems.append(f"{show_path(rel)}: a symlink; a release holds plain files only")
        elif not p.is_dir() and not p.is_file():
            problems.append(f"{show_path(rel)}: not a regular file; a release holds plain files only")
        elif rel == ".work":
            problems.append(".work: the working folder of an unfinished release; rerun `synthgen release` to finish "
                            "it")
    try:
        card = json.loads(_text(root, "card.json"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, NotARegularFile) as e:
        return problems + [f"card.json: unreadable ({type(e).__name__}: {show(str(e))})"]
    from .card import card_problems

    shape = card_problems(card)
    if shape:
        return problems + [f"card.json: {x}" for x in shape]
    for rel, sha in sorted(card["files"].items()):
        if listed.get(rel) != sha:
            problems.append(f"card.json: files: {show_path(rel)} is not in {SUMS} with the same sha256")
    if card["rebuild"].get("rebuildable"):  # a card rebuild refuses is not one a release writes
        from synthgen.errors import DataError

        from .cardcheck import check_rebuild_card

        try:
            check_rebuild_card(card, root / "card.json")
        except DataError as e:
            problems.append(f"card.json: rebuild would refuse it: {str(e).split(': ', 1)[-1]}")
    problems += _check_rounds(root, card)
    problems += _check_files(root, card)
    problems += _check_bound(root, card)
    problems += _check_data(root, card)
    return problems


def _check_bound(root: Path, card: dict) -> list[str]:
    """Every file outside the data formats is bound to card.json (`bound`), and DATASET_CARD.md is
    exactly what the card renders to."""
    from .card import UNBOUND, card_markdown

    out = []
    skip = set(card["formats"]) | {".work"}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and not p.is_symlink() and p.relative_to(root).parts[0] not in skip}
    for rel in sorted(present - set(card["bound"]) - set(UNBOUND)):
        out.append(f"{show_path(rel)}: not bound to card.json (added or renamed after the release was written)")
    for rel, sha in sorted(card["bound"].items()):
        got = _sha(root, rel)
        if got is None:
            out.append(f"{show_path(rel)}: bound to card.json but missing (or not a plain file)")
        elif got != sha:
            out.append(f"{show_path(rel)}: differs from the file card.json binds (bound sha256): it was edited")
    try:
        md = _text(root, "DATASET_CARD.md")
    except (OSError, UnicodeDecodeError, NotARegularFile):
        md = None
    if md != card_markdown(card):
        out.append("DATASET_CARD.md: differs from what card.json renders to (it was edited, or card.json was); the card "
                   "is card.json, DATASET_CARD.md is derived from it")
    return out


def _check_rounds(root: Path, card: dict) -> list[str]:
    """Each audit round's report is the one the card summarised, and the certificate follows
    from the final verdict."""
    out = []
    rounds = card["audit"]["rounds"]
    for r in rounds:
        if _sha(root, r["report"]) != r["report_sha256"]:
            out.append(f"{show_path(r['report'])}: differs from the report card.json summarised (report_sha256)")
            continue
        try:
            rep = json.loads(_text(root, r["report"]))
            status = rep["verdict"]["status"]
            digest = ((rep.get("dataset") or {}).get("synthetic") or {}).get("pixels_sha256")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, NotARegularFile):
            status = digest = None
        if status != r["status"]:
            out.append(f"{show_path(r['report'])}: verdict {show(str(status))}, card.json says {show(r['status'])}")
        if digest is not None and digest != r.get("pixels_sha256"):
            out.append(f"{show_path(r['report'])}: pixels_sha256 differs from the one card.json gives for round "
                       f"{show(str(r.get('round')))}")
    final = rounds[-1]["status"]
    c = (card.get("quality") or {}).get("consistency")
    if isinstance(c, dict):  # the consistency floor follows from the final report (bound above)
        from .floor import consistency_floor

        try:
            want = consistency_floor(json.loads(_text(root, rounds[-1]["report"])), float(c["floor"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, NotARegularFile):
            want = None
        if want is not None and ([r["rate"] for r in want["matchers"]] != [r.get("rate") for r in c["matchers"]]
                                 or want["ok"] != c["ok"]):
            out.append(f"card.json: quality.consistency does not follow from the final audit report: it gives "
                       f"{[round(r['rate'], 4) for r in want['matchers']]} against the floor {c['floor']} "
                       f"({'met' if want['ok'] else 'NOT met'})")
        if want is not None and not want["ok"] and card["certified"]:
            out.append("card.json: certified, but the final audit's identity consistency is below the card's floor")
    covered = True
    try:  # the final audit embedded every released image, with no subset (max_per_class)
        rep = json.loads(_text(root, rounds[-1]["report"]))
        covered = rep["config"].get("max_per_class") is None and \
            rep["counts"]["synthetic_images"] == card["counts"]["images"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, NotARegularFile):
        covered = False
    should = final == "pass" and covered and (card.get("quality") or {}).get("ok", True) is True
    if card["certified"] != should or (card.get("status") == "certified") != card["certified"]:
        why = "its verdict is " + final if final != "pass" else "it did not embed every released image"
        out.append(f"card.json: certified is {card['certified']} (status {show(str(card.get('status')))}) but the final "
                   f"audit's {why}: only a pass of every image certifies" if card["certified"] else
                   "card.json: certified is false but the final audit passed every released image")
    return out


def _check_files(root: Path, card: dict) -> list[str]:
    """Every data file is one the card lists, with its sha256, in a format the card names."""
    problems = []
    files = card["files"]
    from .config import formats_available

    for f in formats_available():
        d = root / f
        if f not in card["formats"] and d.exists():
            problems.append(f"{f}/: a format folder card.json does not list")
        elif d.is_dir():
            for p in sorted(d.rglob("*")):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and rel not in files and rel != "shards/index.json":
                    problems.append(f"{show_path(rel)}: a data file card.json does not list (added after the release "
                                    "was written)")
    for rel, sha in sorted(files.items()):
        got = _sha(root, rel)
        if got is None:
            problems.append(f"{show_path(rel)}: listed in card.json files but missing (or not a plain file)")
        elif got != sha:
            problems.append(f"{show_path(rel)}: sha256 differs from card.json files")
    return problems


def _check_data(root: Path, card: dict) -> list[str]:
    """The shards are intact, and hold what the card counts, and no quarantined key."""
    from synthgen.errors import SynthgenError
    from synthgen.shards import verify as verify_shards

    for p in sorted((root / "shards").iterdir()) if (root / "shards").is_dir() else []:
        if _sha(root, f"shards/{p.name}") is None:  # a FIFO or link is never handed to HDF5
            return [f"shards/{show(p.name)}: not a plain file; a release holds plain files only"]
    problems = [f"shards: {p}" for p in verify_shards(root / "shards")]
    if problems:
        return problems
    try:
        from synthgen.data import _Shards

        s = _Shards(root / "shards")
        keys = [s.key(i) for i in range(len(s.labels))]
    except SynthgenError as e:
        return [f"shards: {e}"]
    from synthgen.audit.embed import ImageSet, pixels_digest

    pixels = pixels_digest(ImageSet(root / "shards"))
    final = card["audit"]["rounds"][-1]
    if pixels != card["pixels_sha256"]:
        problems.append(f"shards: the released pixels (sha256 {pixels[:16]}...) differ from card.json's pixels_sha256 "
                        f"({card['pixels_sha256'][:16]}...): an image was changed after the release was written")
    if final.get("pixels_sha256") != card["pixels_sha256"]:
        problems.append(f"card.json: the final audit (round {final.get('round')}) embedded pixels with sha256 "
                        f"{show(str(final.get('pixels_sha256')))[:20]}..., not the released ones: the audit is not of "
                        "these images")
    counts = card["counts"]
    idx = s.index
    if counts["images"] != len(keys):
        problems.append(f"card.json: counts.images is {counts['images']!r}, the shards hold {len(keys)} images")
    per = dict(zip(idx["classes"], idx["items_per_class"]))
    if counts.get("per_class") != per:
        diff = sorted(k for k in set(per) | set(counts.get("per_class") or {})
                      if per.get(k) != (counts.get("per_class") or {}).get(k))
        problems.append(f"card.json: counts.per_class differs from the shards for {len(diff)} classes, e.g. "
                        f"{show(str(diff[0]))}")
    if card.get("labels") != {c: i for i, c in enumerate(idx["classes"])}:
        problems.append("card.json: labels differ from the shards' classes (index.json)")
    quarantined = {o["key"] for o in card["remediation"]["operations"]}
    back = sorted(quarantined & set(keys))
    if back:
        problems.append(f"shards: {len(back)} quarantined keys are present, e.g. {show(back[0])} (quarantine.csv "
                        "says it was removed or replaced)")
    return problems

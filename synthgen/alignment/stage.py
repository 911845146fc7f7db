"""`synthgen align`: the stage. Every input file gets a manifest record; crops are written
atomically; a journal makes an interrupted run resume where it stopped."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.contract import MANIFEST, MARKERS, Status, identity_of
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.imageio import IMAGE_EXTS, NotAStillImage, UnreadableImage, list_inputs, load_rgb
from synthgen.options import check_choices, check_ranges, opt
from synthgen.runs import check_device, check_types, config_hash
from synthgen.safepath import safe_relpath
from synthgen.stage import StageSummary, now, open_output, write_marker

from .detectors import DETECTORS, detect_and_align, make_detector
from .geometry import load_template

STATUSES = tuple(s.value for s in Status if s != Status.MISSING)  # what align writes
ALIGN_JSON = MARKERS["align"]
JOURNAL = ".align-journal.jsonl"


def parse_thresholds(text: str) -> tuple:
    """`--thresholds 0.6,0.7,0.7` -> (0.6, 0.7, 0.7); ValueError saying what was expected."""
    wrong = ValueError(f"expected three numbers like 0.6,0.7,0.7, got '{text}'")
    try:
        t = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise wrong from None
    if len(t) != 3:
        raise wrong
    return t


def _detector_names() -> tuple:
    return tuple(DETECTORS)


@dataclass
class AlignConfig:
    inp: str = opt(flag="--in", path="any", metavar="DIR",
                   help="Identity-folder tree of images (e.g. a generate output or CASIA-WebFace).")
    out: str = opt(path="dir", metavar="DIR", help="Output tree of aligned crops.")
    size: int = opt(112, range=(16, None), unit="px", metavar="PX", help="Output side; the template is scaled from 112.")
    template: str = opt("arcface", metavar="arcface|arcface-shift8|FILE.json", help="Landmark template.")
    # the command line offers real detectors only; the library's parity double is for tests and TOML
    detector: str = opt("mtcnn", choices=_detector_names, cli_choices=("mtcnn",), help="Face detector.")
    min_face_size: int = opt(20, range=(1, None), unit="px", metavar="PX", help="MTCNN minimum face size.")
    thresholds: tuple = opt((0.6, 0.7, 0.7), parse=parse_thresholds, metavar="P,R,O", help="MTCNN stage thresholds.")
    min_prob: float = opt(0.0, range=(0, 1), metavar="P",
                          help="Faces below this probability count as 'low_prob' misses.")
    select: str = opt("largest", choices=("largest", "center", "prob"), help="Which face when several are found.")
    on_miss: str = opt("skip", choices=("skip", "center-crop", "keep"), help="What to write when no face is found.")
    batch_size: int = opt(32, range=(1, None), unit="images", metavar="N",
                          help="Images per step / per batched detector call.")
    # None = on for CUDA, off for CPU (see MTCNNDetector)
    batched_detection: bool | None = opt(None, off_flag="--per-image-detection",
                                         help="Batch MTCNN calls (faster; results then depend on --batch-size). "
                                              "[default: batched on CUDA, per image on CPU]")
    detect_size: int = opt(0, range=(0, None), unit="px", metavar="PX",
                           help="Detect on images resized to this longer side (0 = native); mixed sizes are "
                                "letterboxed for batched detection.")
    device: str = opt("auto", metavar="auto|cpu|cuda", help="Where to run MTCNN and the warp.")
    workers: int = opt(1, range=(1, None), unit="processes", metavar="N", help="CPU worker processes.")
    overwrite: bool = opt(False, help="Replace an output directory that holds a different run.")
    progress: bool = True

    RUNTIME_FIELDS = ("inp", "out", "batch_size", "device", "workers", "overwrite", "progress")


def validate_config(cfg: AlignConfig, host: bool = True) -> None:
    """Every check that writes nothing and needs no input: types, choices, ranges; with `host`,
    also this machine's side (template file, device). align() calls it before touching --out;
    `synthgen run` calls it for [align] before any stage runs."""
    check_types(cfg)
    check_choices(cfg, ("detector", "select", "on_miss"))
    check_ranges(cfg, ("size", "min_face_size", "min_prob", "batch_size", "detect_size", "workers"))
    t = cfg.thresholds
    if len(t) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in t):
        raise UsageError(f"expected three numbers in (0, 1) like 0.6,0.7,0.7, got {t}", "--thresholds")
    if cfg.inp and cfg.out:
        inp, out = Path(cfg.inp).resolve(), Path(cfg.out).resolve()
        if out == inp or inp in out.parents:
            raise UsageError(f"{cfg.out} must not be inside the input tree {cfg.inp}", "--out")
    check_device(cfg.device, "--device", host)
    if host:
        load_template(cfg.template, cfg.size)


def _identity(cfg: AlignConfig, template_pts, device) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in AlignConfig.RUNTIME_FIELDS}
    d["device_type"] = device.type
    d["batched_detection"] = _batched(cfg, device)
    if d["batched_detection"]:  # float results then depend on which images share a batch
        d["batch_size"] = cfg.batch_size
    d["thresholds"] = list(d["thresholds"])
    d["template_points"] = np.round(template_pts, 6).tolist()
    return d


def process_batch(rels, images, detector, cfg: AlignConfig, template_pts, template_name, device="cpu"):
    """detect_and_align with this config's settings."""
    return detect_and_align(rels, images, detector, template_pts, template_name, cfg.size, select=cfg.select,
                            min_prob=cfg.min_prob, on_miss=cfg.on_miss, detect_size=cfg.detect_size, device=device)


def _out_name(rel: str) -> str:
    return str(Path(rel).with_suffix(".png").as_posix())


def _refuse_name_collisions(inp: Path, rels: list) -> None:
    """Crops are PNGs named after their source: a.jpg and a.png would both become a.png, and one
    face would be lost while both were counted. Refused before --out is created."""
    seen: dict[str, str] = {}
    for rel in rels:
        name = _out_name(rel)
        if name in seen:
            from synthgen.safepath import show_path

            raise DataError(f"{show_path(inp / seen[name])} and {show_path(inp / rel)}: both would be written as "
                            f"{name} (crops are PNGs named after their source); rename one and rerun")
        seen[name] = rel


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def align_step(rels, cfg: AlignConfig, template_pts, template_name, device, detector=None, only=None):
    """One step of the stage: load, group by size, detect, align, write. Returns the records (in
    input order) of `only` (default: all); the others are still detected, so batched detection
    sees the same batch. Public so tests can interrupt a run between steps."""
    if only is not None and not detector_batched(detector, cfg, device):
        rels = [r for r in rels if r in only]
    detector = detector or _make_detector(cfg, device)
    inp, out = Path(cfg.inp), Path(cfg.out)
    loaded, records = {}, {}
    for rel in rels:
        try:
            loaded[rel] = load_rgb(inp / rel, still_only=True)
        except UnreadableImage as e:
            records[rel] = {"source": rel, "identity": identity_of(rel),
                            "status": "skipped" if isinstance(e, NotAStillImage) else "unreadable",
                            "error": str(e).split(": ", 1)[-1], "template": template_name}
    part = [r for r in rels if r in loaded]
    if part:
        try:
            recs, crops = process_batch(part, [loaded[r] for r in part], detector, cfg, template_pts, template_name, device)
        except Exception:  # a failure is data, never a crash of the run; and one image never fails its neighbours
            recs, crops = _one_by_one(part, loaded, detector, cfg, template_pts, template_name, device)
        for i, rec in enumerate(recs):
            if only is not None and rec["source"] not in only:
                continue
            if i in crops:
                rec["path"] = _out_name(rec["source"])
                _save_png(out / rec["path"], crops[i])
            records[rec["source"]] = rec
    return [records[r] for r in rels if only is None or r in only]


def _one_by_one(part, loaded, detector, cfg, template_pts, template_name, device):
    """A step that failed as a whole, redone image by image: the image that fails is the only error."""
    recs, crops = [], {}
    for rel in part:
        try:
            (rec,), crop = process_batch([rel], [loaded[rel]], detector, cfg, template_pts, template_name, device)
            if 0 in crop:
                crops[len(recs)] = crop[0]
        except Exception as e:
            rec = {"source": rel, "identity": identity_of(rel), "status": "error", "error": f"{type(e).__name__}: {e}",
                   "template": template_name}
        recs.append(rec)
    return recs, crops


def detector_batched(detector, cfg, device) -> bool:
    return detector.batched if detector is not None else _batched(cfg, device)


def _make_detector(cfg: AlignConfig, device):
    return make_detector(cfg.detector, device=device, min_face_size=cfg.min_face_size, thresholds=cfg.thresholds,
                         batched=_batched(cfg, device))


def _batched(cfg: AlignConfig, device) -> bool:
    import torch

    if cfg.batched_detection is not None:
        return bool(cfg.batched_detection)
    return torch.device(device).type == "cuda"


_WORKER = {}


def _worker_init(cfg, template_pts, template_name):
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks

    torch.set_num_threads(1)
    _WORKER.update(cfg=cfg, pts=template_pts, name=template_name, det=_make_detector(cfg, "cpu"))


def _worker_run(job):
    rels, only = job
    w = _WORKER
    return align_step(rels, w["cfg"], w["pts"], w["name"], "cpu", w["det"], only)


def _read_journal(path: Path) -> dict:
    done = {}
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                r = json.loads(line)
            except (ValueError, RecursionError):  # torn last line from a crash
                continue
            if not (isinstance(r, dict) and isinstance(r.get("source"), str) and isinstance(r.get("status"), str)):
                continue  # not a record of ours: the image is redone
            if "path" in r:  # joined to --out and copied into the manifest: must stay inside --out
                safe_relpath(r["path"], path.parent, path, f"line {n} 'path'", f"delete {path.name} and rerun")
            done[r["source"]] = r
    return done


def align(cfg: AlignConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen align`; returns the summary written to align.json."""
    from synthgen.device import resolve_device

    cfg = cfg or AlignConfig(**kwargs)
    validate_config(cfg)  # the whole config, before anything is created
    inp, out = Path(cfg.inp), Path(cfg.out)
    if not inp.is_dir():
        raise UsageError(f"{inp} is not a directory (expected an identity-folder tree of images)", "--in")
    template_name, template_pts = load_template(cfg.template, cfg.size)
    device = resolve_device(cfg.device)
    rels, skipped = list_inputs(inp)
    if not rels:
        more = f" ({len(skipped)} other files, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{inp}: no images found{more}; expected {', '.join(IMAGE_EXTS)} files in identity folders")
    _refuse_name_collisions(inp, rels)
    ident = _identity(cfg, template_pts, device)
    open_output(out, ALIGN_JSON, ident, cfg.overwrite)
    try:
        meta, records, todo, elapsed = _align_into(cfg, inp, out, rels, skipped, template_name, template_pts, device, ident)
    except OSError as e:  # full disk, quota, I/O error: finished crops and the journal are kept
        from synthgen.errors import describe_os_error

        raise DataError(f"writing to {out} failed: {describe_os_error(e, str(out))} (finished images are kept; "
                        "the same command resumes)") from None
    return StageSummary("align", meta, status=meta["status"], config_hash=meta["config_hash"],
                        brief={"counts": meta["counts"], "written": meta["written"]})


def _align_into(cfg, inp, out, rels, skipped, template_name, template_pts, device, ident):
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta = {"status": "running", "config": dataclasses.asdict(cfg), "identity": ident, "config_hash": config_hash(ident),
            "template_name": template_name, "synthgen": __version__, "started": started,
            "total": len(rels) + len(skipped)}
    if not (out / ALIGN_JSON).exists():
        write_marker(out, ALIGN_JSON, meta)
    journal_path = out / JOURNAL
    # What earlier runs of this config finished: the manifest of a complete run, then the journal
    # of an interrupted one. Images whose crop is there are not redone (a rerun is a no-op).
    prior = {**_read_journal(out / MANIFEST), **_read_journal(journal_path)}
    live = set(rels)
    _remove_crops_of_gone_inputs(out, prior, live)
    done = {k: r for k, r in prior.items() if k in live and ("path" not in r or (out / r["path"]).is_file())}
    todo = [r for r in rels if r not in done]
    t0 = time.time()
    _run(rels, cfg, template_pts, template_name, device, journal_path, done)
    elapsed = time.time() - t0
    for rel, reason in skipped:  # every input file gets a record; these are not images we align
        done[rel] = {"source": rel, "identity": identity_of(rel), "status": "skipped",
                     "error": reason, "template": template_name}
    records = [done[r] for r in sorted(rels + [r for r, _ in skipped])]
    atomic_write_text(out / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    counts = {s: 0 for s in STATUSES}
    per_identity: dict[str, dict] = {}
    for r in records:
        counts[r["status"]] += 1
        pi = per_identity.setdefault(r["identity"], {s: 0 for s in STATUSES})
        pi[r["status"]] += 1
    meta = write_marker(out, ALIGN_JSON, meta, status="complete", finished=now(), counts=counts,
                        written=sum(1 for r in records if "path" in r), per_identity=per_identity,
                        seconds_this_run=round(elapsed, 3), processed_this_run=len(todo),
                        images_per_s=round(len(todo) / elapsed, 2) if elapsed > 0 and todo else None)
    journal_path.unlink(missing_ok=True)
    return meta, records, todo, elapsed


def _remove_crops_of_gone_inputs(out: Path, prior: dict, inputs: set) -> None:
    """An input deleted since the last run takes its crop with it (else audit and shard would count
    it). Changed inputs under the same name are not detected: use --overwrite after editing inputs."""
    live = {r.get("path") for k, r in prior.items() if k in inputs}
    for src, r in prior.items():
        if src not in inputs and "path" in r and r["path"] not in live:
            crop = out / r["path"]
            crop.unlink(missing_ok=True)
            try:
                crop.parent.rmdir()  # the identity folder, once empty
            except OSError:
                pass


def _run(rels, cfg, template_pts, template_name, device, journal_path, done):
    """Steps are fixed slices of the full sorted list (not of what is left), so a resumed run
    puts the same images together as an uninterrupted one; finished images are not redone."""
    from tqdm import tqdm

    bar = tqdm(total=len(rels), initial=len(done), unit="img", desc="align", disable=not cfg.progress, dynamic_ncols=True)
    chunk = max(cfg.batch_size, 1)
    chunks = []
    for i in range(0, len(rels), chunk):
        part = rels[i : i + chunk]
        left = {r for r in part if r not in done}
        if left:
            chunks.append((part, left if len(left) < len(part) else None))
    with open(journal_path, "a", encoding="utf-8") as journal:
        def record(recs):
            for r in recs:
                done[r["source"]] = r
                journal.write(json.dumps(r, sort_keys=True) + "\n")
            journal.flush()
            bar.update(len(recs))

        if cfg.workers > 1 and device.type == "cpu" and len(chunks) > 1:
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(cfg, template_pts, template_name)) as pool:
                for recs in pool.imap(_worker_run, chunks):
                    record(recs)
        else:
            det = _make_detector(cfg, device) if chunks else None
            for part, only in chunks:
                record(align_step(part, cfg, template_pts, template_name, device, det, only))
    bar.close()



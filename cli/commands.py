"""Commands: each parses its options and calls one library function. `COMMANDS` lists them;
cli/main.py adds them to the `synthgen` group (this module imports nothing from it)."""

from __future__ import annotations

import click

from synthgen.alignment import AlignConfig
from synthgen.audit.matchers import MATCHERS as MATCHER_NAMES
from synthgen.errors import UsageError, escape_control
from synthgen.audit.config import AuditConfig
from synthgen.export import ExportConfig
from synthgen.quality.config import QualityConfig
from synthgen.generation import GenerateConfig
from synthgen.options import click_options
from synthgen.release.config import ReleaseConfig
from synthgen.shards import ShardConfig


NETWORK = click.Path(dir_okay=False, path_type=str)
# Options of the CLI only; the others come from the stage configs' fields (synthgen.options).
QUIET = click.option("--quiet", is_flag=True, help="No progress bars (results, warnings and summaries still print).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


def echo_json(obj) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def brief_line(summary: dict) -> str:
    """A stage's brief summary as words, whole (never JSON cut off mid-value)."""
    parts = []
    for k, v in summary.items():
        if k == "verdict" and isinstance(v, dict):
            parts.append(f"verdict {v.get('status')}")
        elif isinstance(v, dict):
            parts.append(f"{k}: " + ", ".join(f"{kk} {vv}" for kk, vv in v.items() if vv))
        elif v is not None:
            parts.append(f"{k} {v}")
    return "; ".join(parts)


@click.command()
@click.argument("network", type=NETWORK)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(network, as_json):
    """Describe a generator file (NVIDIA .pkl or synthgen checkpoint).

    \b
    Example:
      synthgen info sface-casia-128.pkl
      synthgen info sface-casia-128.pkl --json
    """
    from synthgen.info import format_info, network_info

    d = network_info(network)
    if as_json:
        echo_json(d)
        return
    for line in format_info(network, d):
        click.echo(escape_control(line))  # provenance strings come from the file: they cannot forge lines


@click.command()
@click.argument("src", metavar="IN.pkl", type=NETWORK)
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=str))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert(src, dst, overwrite):
    """Convert a NVIDIA StyleGAN2-ADA .pkl into a synthgen checkpoint (weights + JSON config).

    The checkpoint loads with torch.load(weights_only=True): no code can run on load.

    \b
    Example:
      synthgen convert sface-casia-128.pkl sface-casia-128.pt
    """
    from synthgen.info import convert_network

    d = convert_network(src, dst, overwrite=overwrite)
    click.echo(f"wrote {dst} (sha256 {d['sha256'][:16]}..., from {src})")


@click.command()
@click_options(GenerateConfig, exclude=("overwrite", "progress"))
@click_options(GenerateConfig, only=("overwrite",))
@QUIET
@JSON
def generate(quiet, as_json, **options):
    """Sample a generator into identity folders with a manifest (deterministic, resumable).

    Rerunning the same command resumes; under torchrun each process takes a slice.

    \b
    Examples:
      synthgen generate --network sface.pkl --out raw --classes all --per-class 60
      synthgen generate --network sface.pkl --out raw --classes 0-9 --seeds 0-4 --psi 0.7
      synthgen generate --network uncond.pkl --out usynth --count 100000 --views 2
      synthgen generate --network sface.pkl --out raw --precision fp16 --chunk-size 1   # = NVIDIA generate.py
      synthgen generate --network sface.pkl --out aligned --per-class 60 --align --max-retries 20
      torchrun --nproc_per_node 8 -m synthgen generate --network sface.pkl --out raw
    """
    from synthgen.generation import generate as run_generate

    summary = run_generate(GenerateConfig(**options, progress=not (quiet or as_json)))
    if as_json:
        echo_json(summary)
    else:
        state = "complete" if summary.get("complete") else "slice done"
        click.echo(f"{state}: {summary['written']} written, {summary['skipped_existing']} already there, "
                   f"{summary['total']} in the run -> {options['out']}")


@click.command()
@click_options(AlignConfig, exclude=("progress",))
@QUIET
@JSON
def align(quiet, as_json, **options):
    """Align faces to the ArcFace template: MTCNN 5 points -> similarity warp -> crop.

    Every image gets a manifest record (ok, no_face, low_prob, unreadable, error); rerun to resume.

    \b
    Examples:
      synthgen align --in raw --out aligned
      synthgen align --in CASIA-WebFace --out casia-112 --workers 2
      synthgen align --in raw --out aligned --on-miss center-crop --device cuda --batch-size 256
    """
    from synthgen.alignment import align as run_align

    s = run_align(AlignConfig(**options, progress=not (quiet or as_json)))
    if as_json:
        echo_json({k: s[k] for k in ("counts", "written", "total", "seconds_this_run", "images_per_s")})
    else:
        c = s["counts"]
        done = "" if s["processed_this_run"] == s["written"] else f"; {s['processed_this_run']} processed this run"
        click.echo(f"aligned {s['written']} of {s['total']} -> {options['out']} ({', '.join(f'{k} {v}' for k, v in c.items() if v)}{done})")


@click.command()
@click_options(ShardConfig, exclude=("progress",))
@QUIET
def shard(quiet, **options):
    """Pack an image tree into HDF5 shards with an index (resumable, deterministic).

    \b
    Examples:
      synthgen shard --in aligned --out shards
      synthgen shard --in aligned --out shards-png --encoding png --shard-size 50000
    """
    from synthgen.shards import shard as run_shard

    idx = run_shard(ShardConfig(**options, progress=not quiet))
    click.echo(f"{idx['total']} images, {idx['num_classes']} classes in {len(idx['shards'])} shards -> {options['out']}")


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=str))
@click.option("--expect", metavar="ID", default=None, help="A release's id (the sha256 of its card.json, as `synthgen release` printed and its publisher posted): prove that nothing in DIR differs from what that id names.")
def verify(directory, expect):
    """Check a shard folder or a release folder.

    Shards: every shard against index.json (counts, sha256, labels, keys, image data). A release
    (SHA256SUMS + card.json): every file against SHA256SUMS, the shards, the card's counts and
    labels against the data, and that no quarantined key is present. Exit code 1 on any problem,
    one line each, naming the file.

    \b
    Examples:
      synthgen verify shards
      synthgen verify releases/sface60
    """
    from synthgen.release import is_release, verify_release
    from synthgen.shards import verify as run_verify

    if expect is not None and not is_release(directory):
        raise UsageError(f"{directory} is not a release (no card.json + SHA256SUMS); --expect checks a release's id",
                         "--expect")
    problems = verify_release(directory, expect) if is_release(directory) else run_verify(directory)
    if problems:
        for p in problems:
            click.echo(f"FAIL {escape_control(str(p))}", err=True)  # keys come from the files
        raise SystemExit(1)
    status = ""
    if is_release(directory):  # intact is not certified: say which this release is
        import json
        from pathlib import Path

        certified = json.loads((Path(directory) / "card.json").read_text()).get("certified") is True
        status = "" if certified else " (intact, and its card says NOT CERTIFIED: the reasons are in DATASET_CARD.md)"
    if expect is not None:
        click.echo(f"ok: {directory} is release {expect.strip().lower()}: every file is bound to its card.json{status}")
    else:
        click.echo(f"ok: {directory}{status}")


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=str))
@click_options(ExportConfig)
@QUIET
def export(directory, quiet, **options):
    """Export shards for trainers: insightface RecordIO (train.rec/.idx/property), ImageFolder,
    WebDataset tars with DALI indexes, or Hugging Face parquet (data/train-*.parquet).

    \b
    Examples:
      synthgen export shards --format recordio --out faces_sface
      synthgen export shards --format recordio --out faces_sface_dali --shuffle --seed 0
      synthgen export shards --format imagefolder --out sface-folder
      synthgen export shards --format webdataset --out sface-wds --shuffle
      synthgen export shards --format parquet --out sface-hf
    """
    from synthgen.export import export as run_export

    r = run_export(directory, progress=not quiet, **options)
    click.echo(f"exported {r['images']} images, {r['classes']} classes as {options['format']} -> {options['out']}")


@click.command()
@click_options(AuditConfig, only=("synthetic", "authentic", "out"))
@click.option("--matcher", "matchers", multiple=True, type=click.Choice(MATCHER_NAMES), help="Face matcher (repeatable: each gets its own calibration; pixels: a test double, not a face matcher) [default: facenet-vggface2].")
@click.option("--weights", "weights", multiple=True, type=click.Path(dir_okay=False, path_type=str), metavar="FILE", help="Matcher weights (needed offline); repeatable: one per --matcher, in order.")
@click_options(AuditConfig, only=("arch", "rule", "alpha", "combine", "fmr", "threshold", "batch_size", "device",
                                  "max_per_class", "top_k", "label_map", "cache_dir", "fail_on_leak"))
@QUIET
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def audit(matchers, weights, quiet, as_json, **options):
    """Identity-leakage report: can a synthetic identity or image be linked to a real one?

    Writes report.json (verdict.status: pass | leak | inconclusive, with reasons), report.html,
    flagged.csv and an embeddings cache under OUT.

    \b
    Examples:
      synthgen audit --synthetic sface-aligned --authentic casia-112 --out audit \\
          --matcher facenet-casia --weights 20180408-102900-casia-webface.pt
      synthgen audit --synthetic shards --authentic casia-112 --out audit \\
          --matcher iresnet --arch r100 --weights backbone.pth --fail-on-leak
    """
    from synthgen.audit.report import run_audit

    names = list(matchers) or ["facenet-vggface2"]
    r = run_audit(AuditConfig(matcher=names[0] if len(names) == 1 else names,
                              weights=(weights[0] if len(weights) == 1 else list(weights)) if weights else None,
                              progress=not (quiet or as_json), **options))
    v = r["verdict"]
    for w in r["warnings"]:  # on stderr, --quiet and --json included
        click.echo(f"warning: {escape_control(w)}", err=True)
    if as_json:
        echo_json(v)
    else:
        click.echo(f"verdict: {v['status'].upper()}")
        for reason in v["reasons"]:  # keys come from file names: escaped, one line each
            click.echo(f"  - {escape_control(reason)}")
        for step in v["next_steps"]:
            click.echo(f"  next: {escape_control(step)}")
        click.echo(f"report: {options['out']}/report.html")
    if options["fail_on_leak"] and v["status"] != "pass":
        raise SystemExit(3 if v["status"] == "leak" else 4)


@click.command()
@click.argument("config", metavar="CONFIG.toml", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=str), metavar="DIR", help="Run directory (overrides `out` in the config).")
@click.option("--network", default=None, metavar="PKL_OR_CKPT", help="Overrides [generate] network.")
@click.option("--authentic", default=None, metavar="PATH", help="Overrides [audit] authentic.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE", help="Override any config value, e.g. --set generate.per_class=10 (repeatable; VALUE in TOML syntax, bare words are strings).")
@click.option("--overwrite", is_flag=True, help="Replace stage outputs made with a different config.")
@click.option("--quiet", is_flag=True, help="No progress bars or stage log (the summary table still prints).")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
def run(config, out, network, authentic, overrides, overwrite, quiet, as_json):
    """Run generate -> align -> shard -> audit (-> release) from one TOML config into one run directory.

    Completed stages are skipped, an interrupted one resumes; a second invocation does nothing.

    \b
    Example:
      synthgen run examples/sface60.toml
      synthgen run examples/sface60.toml --out runs/try2 --network other.pkl
      synthgen run examples/sface60.toml --set generate.per_class=10 --set audit.enabled=false
    """
    from synthgen.pipeline import apply_override, load_config, run_pipeline

    cfg = load_config(config) if config else {}
    for item in overrides:
        apply_override(cfg, item)
    if out:
        cfg["out"] = out
    if network:
        cfg.setdefault("generate", {})["network"] = network
    if authentic:
        cfg.setdefault("audit", {})["authentic"] = authentic
    record = run_pipeline(cfg, overwrite=overwrite, progress=not (quiet or as_json), log=(lambda *a: None) if quiet or as_json else click.echo)
    if as_json:
        echo_json(record)
    else:
        click.echo("")
        click.echo(f"{'stage':<10} {'status':<14} {'seconds':>8}  summary")
        for stage, st in record["stages"].items():
            click.echo(f"{stage:<10} {st.get('status', ''):<14} {st.get('seconds', ''):>8}  {brief_line(st.get('summary', {}))}")
        for w in record["stages"].get("audit", {}).get("summary", {}).get("warnings", []) or []:
            click.echo(f"warning: {escape_control(w)}", err=True)
        verdict = record["stages"].get("audit", {}).get("summary", {}).get("verdict")
        if verdict:  # the result, not just a table row: as `synthgen audit` prints it
            click.echo(f"audit: {verdict['status'].upper()}")
            for reason in verdict.get("reasons", []):
                click.echo(f"  - {escape_control(reason)}")
            click.echo(f"report: {record['config']['out']}/audit/report.html")
    audit_cfg = record["config"].get("audit", {})
    summary = record["stages"].get("audit", {}).get("summary", {})
    status = summary.get("verdict", {}).get("status")
    if audit_cfg.get("fail_on_leak") and status not in (None, "pass") and not record["config"]["release"]["enabled"]:
        raise SystemExit(3 if status == "leak" else 4)  # as `synthgen audit --fail-on-leak`
    rel = record["stages"].get("release", {})
    if rel.get("status") == "refused":  # not written: leaks remain, or inconclusive without allow
        verdict = rel.get("summary", {}).get("final_verdict")
        click.echo(f"release: NOT WRITTEN: the final audit is {verdict} (reports in {record['config']['out']}/release/"
                   "audit/)", err=True)
        raise SystemExit(3 if verdict == "leak" else 4)  # as `synthgen release`


@click.command()
@click.option("--out", default="demo-run", type=click.Path(file_okay=False, path_type=str), metavar="DIR", help="Where the demo writes everything.")
@QUIET
def demo(out, quiet):
    """Offline demo on CPU: random-weight generator and matcher, the whole pipeline, a leak report.

    \b
    Example:
      synthgen demo --out demo-run
    """
    from synthgen.demo import run_demo

    run_demo(out, progress=not quiet, log=click.echo)


@click.command()
@click.argument("run", metavar="RUN_DIR", type=click.Path(path_type=str))
@click_options(ReleaseConfig, exclude=("run", "progress"))
@QUIET
@JSON
def release(run, quiet, as_json, **options):
    """Remediate an audited run, re-audit, and write a documented, verifiable release.

    Flagged images are re-rendered from their next retry seed (--policy regenerate) or dropped;
    flagged and colliding identities are removed as whole classes; images with no generation
    record are removed. Re-audits until the verdict is pass or --max-rounds. Exit 0 when
    certified (or written NOT CERTIFIED with --allow-inconclusive), 3 if leaks remain, 4 if the
    final audit is inconclusive.

    \b
    Examples:
      synthgen release runs/sface60 --out releases/sface60 --format shards,recordio
      synthgen release demo-run/run --out demo-run/release --allow-inconclusive
    """
    from synthgen.release import release as run_release

    r = run_release(ReleaseConfig(run=run, **options, progress=not (quiet or as_json)))
    if as_json:
        echo_json(dict(r))
    else:
        for rd in r["rounds"]:
            click.echo(f"round {rd['round']}: {rd['status']} ({rd.get('flagged_images')} images, "
                       f"{rd.get('flagged_identities')} identities flagged; removed {rd.get('removed', 0) or 0}, "
                       f"replaced {rd.get('replaced', 0) or 0})")
        if r["written"]:
            c = r["counts"]
            click.echo(f"release: {'CERTIFIED' if r['certified'] else 'NOT CERTIFIED'}: {c['images']} images, "
                       f"{c['classes']} classes -> {options['out']} (card: {options['out']}/DATASET_CARD.md)")
            click.echo(f"release id: {r['release_id']} (the sha256 of card.json; post it, and anyone can check the "
                       f"release with `synthgen verify DIR --expect {r['release_id']}`)")
    if not r["written"]:  # always said, --quiet and --json included: the exit code alone explains nothing
        click.echo(f"release: NOT WRITTEN: the final audit is {r['final_verdict']}"
                   + (f" ({r['coverage_gap']})" if r.get("coverage_gap") else "")
                   + f" (reports in {options['out']}/audit/)"
                   + ("; leaks are never released" if r["final_verdict"] == "leak" else
                      "; rerun with --allow-inconclusive to write it marked NOT CERTIFIED"), err=True)
        raise SystemExit(3 if r["final_verdict"] == "leak" else 4)


@click.command()
@click.argument("card", metavar="CARD.json", type=click.Path(dir_okay=False, path_type=str))
@click.option("--network", required=True, type=NETWORK, metavar="PKL", help="The generator file the card names (its sha256 is checked).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), metavar="DIR", help="Where the rebuilt release goes.")
@QUIET
def rebuild(card, network, out, quiet):
    """Regenerate a release from its card and prove it byte for byte.

    Runs generate (and align) with the card's configs, applies its removals and replacements,
    writes its formats and compares every data file with the card's sha256. Exit 1 if any differs.

    \b
    Example:
      synthgen rebuild releases/sface60/card.json --network sface-casia-128.pkl --out rebuilt
    """
    from synthgen.release import rebuild as run_rebuild

    r = run_rebuild(card, network, out, progress=not quiet)
    click.echo(f"rebuilt {r['images']} images; {r['matched']} of {r['files']} data files match the card "
                   f"byte for byte -> {out} (the release was {r['status']}; check the shards with "
                   f"`synthgen verify {out}/shards`)")


@click.command()
@click.argument("benches", metavar="BENCH...", nargs=-1, type=click.Path(path_type=str))
@click.option("--matcher", type=click.Choice(MATCHER_NAMES), help="Face matcher to evaluate (a backbone you trained: iresnet or onnx with --weights).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=str), metavar="FILE", help="Matcher weights.")
@click.option("--arch", default="r100", type=click.Choice(("r18", "r34", "r50", "r100")), help="iResNet depth (--matcher iresnet).")
@click.option("--embeddings", "embeddings", multiple=True, type=click.Path(dir_okay=False, path_type=str), metavar="FILE", help="--matcher embeddings: an .npz with 'embeddings' [2N, D] (and optionally 'embeddings_flip') in the benchmark's image order; one per BENCH.")
@click.option("--out", required=True, type=click.Path(path_type=str), metavar="DIR|FILE", help="Report folder (with --make-pairs: the .bin to write).")
@click.option("--batch-size", default=256, type=click.IntRange(1), metavar="N", help="Images per matcher call.")
@click.option("--device", default="auto", metavar="auto|cpu|cuda", help="Where to run the matcher.")
@click.option("--folds", default=10, type=click.IntRange(2), metavar="K", help="Cross-validation folds (the field uses 10).")
@click.option("--release", "release_dir", type=click.Path(file_okay=False, path_type=str), metavar="REL", help="Add the numbers to this release's card (its utility section); the release gets a new id.")
@click.option("--make-pairs", "make_pairs_from", type=click.Path(path_type=str), metavar="ALIGNED", help="Instead: write a benchmark .bin of balanced pairs from an aligned identity-folder tree.")
@click.option("--pairs", default=6000, type=click.IntRange(1), metavar="N", help="--make-pairs: number of pairs (half genuine).")
@click.option("--seed", default=0, type=int, metavar="S", help="--make-pairs: sampling seed (recorded).")
@QUIET
@JSON
def evaluate(benches, matcher, weights, arch, embeddings, out, batch_size, device, folds, release_dir, make_pairs_from,
             pairs, seed, quiet, as_json):
    """Verification accuracy of a face matcher on LFW-style benchmarks, as insightface computes it.

    BENCH: insightface's .bin files (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin; read
    without running any code) or LFW-style folders with pairs.txt. Writes OUT/report.json,
    OUT/embeddings.npz and OUT/report.html.

    \b
    Examples:
      synthgen evaluate lfw.bin cfp_fp.bin agedb_30.bin --matcher iresnet --arch r50 --weights backbone.pth --out eval
      synthgen evaluate lfw.bin --matcher dlib --out eval-dlib
      synthgen evaluate lfw.bin --matcher embeddings --embeddings lfw-emb.npz --out eval-mine
      synthgen evaluate --make-pairs casia-112-heldout --out heldout.bin --pairs 6000 --seed 0
      synthgen evaluate lfw.bin --matcher iresnet --arch r50 --weights trained-on-rel.pth --out eval --release rel
    """
    from synthgen.evaluate import EvaluateConfig, evaluate as run_evaluate, make_pairs

    if make_pairs_from:
        if benches or matcher or embeddings or weights or release_dir:
            raise UsageError("--make-pairs writes a benchmark; give no BENCH, --matcher, --weights or --embeddings "
                             "with it", "--make-pairs")
        r = make_pairs(make_pairs_from, out, pairs=pairs, folds=folds, seed=seed)
        if as_json:
            echo_json({k: v for k, v in r.items() if k != "keys"})
        else:
            click.echo(f"wrote {r['out']}: {r['pairs']} pairs ({r['genuine']} genuine, {r['imposter']} imposter) from "
                       f"{r['identities']} identities, {folds} folds, seed {seed} (pairs listed in {r['out']}.json)")
        return
    if not matcher:
        raise UsageError("which matcher to evaluate: --matcher NAME (with --weights FILE for a trained backbone)",
                         "--matcher")
    r = run_evaluate(EvaluateConfig(benches=list(benches), out=out, matcher=matcher, weights=weights, arch=arch,
                                    embeddings=list(embeddings), batch_size=batch_size, device=device, folds=folds,
                                    release=release_dir, progress=not (quiet or as_json)))
    if as_json:
        echo_json(r)
        return
    click.echo(f"{'benchmark':<14} {'pairs':>6}  {'accuracy % (flip)':>18}  {'no flip':>14}  TAR@FAR=1e-3 [95% CI]")
    for b in r["benchmarks"]:
        f = b["flip"] or b["no_flip"]
        t = f["tar_at_far"][0]
        tar = "n/a" if t["tar"] is None else (f"{100 * t['tar']:.2f} [{100 * t['tar_ci95'][0]:.2f}, "
                                             f"{100 * t['tar_ci95'][1]:.2f}]" + ("" if t["supported"] else " (too few imposter pairs)"))
        acc = "n/a" if b["flip"] is None else f"{100 * b['flip']['accuracy']:.2f} ± {100 * b['flip']['std']:.2f}"
        click.echo(f"{escape_control(b['name'])[:14]:<14} {b['pairs']:>6}  {acc:>18}  "
                   f"{100 * b['no_flip']['accuracy']:>8.2f} ± {100 * b['no_flip']['std']:.2f}  {tar}")
    click.echo(f"report: {out}/report.html")
    if r.get("release_id"):
        click.echo(f"release {release_dir}: utility section added to its card; new release id {r['release_id']} "
                   "(the old id no longer names the folder)")


@click.command()
@click.argument("inp", metavar="IN", type=click.Path(path_type=str))
@click_options(QualityConfig, exclude=("inp", "progress"))
@QUIET
@JSON
def quality(inp, quiet, as_json, **options):
    """What the data is: per image detection, head pose, sharpness, exposure and identity measures.

    IN is an aligned folder (synthgen align --out, with its manifest.jsonl) or a shard folder.
    Writes OUT/quality.csv (one row per image), classes.csv, report.json (the dataset summary) and
    a self-contained report.html; any filter option also writes decisions.csv (every image kept or
    dropped, by which measure).

    \b
    Examples:
      synthgen quality aligned --out quality --matcher dlib
      synthgen quality aligned --out quality --matcher none            # no identity measures
      synthgen quality aligned --out q2 --matcher dlib --cache-dir audit/embeddings
      synthgen quality aligned --out q3 --no-fallback --max-yaw 45 --min-sharpness 20 --min-consistency 0.9
    """
    from synthgen.quality.stage import quality as run_quality

    r = run_quality(QualityConfig(inp=inp, **options, progress=not (quiet or as_json)))
    s = r["summary"]
    for w in r["warnings"]:  # on stderr, --quiet and --json included
        click.echo(f"warning: {escape_control(w)}", err=True)
    if as_json:
        echo_json({"summary": s, "filters": r["filters"]})
        return
    d = s["detection"]
    rate = "n/a" if d["detection_rate"] is None else f"{100 * d['detection_rate']:.1f} %"
    fb = "n/a" if d["fallback_rate"] is None else f"{100 * d['fallback_rate']:.1f} %"
    click.echo(f"quality: {s['images']} images, {s['classes']} classes; detection rate {rate}, fallback rate {fb}")
    yaw = s["pose"]["abs_yaw"]
    if yaw.get("count"):
        click.echo(f"  |yaw| median {yaw['p50']:.1f} deg, 95 % below {yaw['p95']:.1f} deg; sharpness median "
                   f"{s['image']['sharpness'].get('p50', float('nan')):.0f}")
    ident = s.get("identity")
    if ident and ident["consistency_mean"].get("count"):
        click.echo(f"  class consistency median {ident['consistency_mean']['p50']:.3f} (worst class "
                   f"{ident['consistency_mean']['min']:.3f}); distinctness median "
                   f"{ident['distinctness'].get('p50', float('nan')):.3f}")
    f = r["filters"]
    if f:
        click.echo(f"  filters: kept {f['kept']} of {f['images']} images, dropped {f['dropped']} ("
                   + ", ".join(f"{n} {v['first_reason']}" for n, v in f["per_filter"].items()) + ")")
    click.echo(f"report: {options['out']}/report.html")


COMMANDS = (info, convert, generate, align, quality, shard, verify, export, audit, evaluate, run, demo, release, rebuild)

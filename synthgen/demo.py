"""`synthgen demo`: the whole pipeline offline on CPU in a few minutes, on random weights.

What it builds, all from fixed seeds:
  network.pt      a small class-conditional StyleGAN2-ADA (32 px, 8 classes) with RANDOM weights
  matcher.pth     an arcface_torch-style iResNet-18 with RANDOM weights
  authentic/      a small "authentic" set: 8 identities rendered by a second random network
  run/            generate -> align -> shard -> audit -> release, via the same code as `synthgen run`
  run/release/    the release: shards, quarantine.csv, card.json, DATASET_CARD.md, SHA256SUMS
A few authentic images are planted into the synthetic set before alignment: they score at copy
level (what an authentic image scores against its own re-encoded copy), so the audit is a LEAK
naming them, although a random-weight matcher and 48 authentic images cannot calibrate the search
rule. The release removes them (flagged, and no generation record); its final audit, without the
copies, is honestly INCONCLUSIVE, so it is written with allow_inconclusive, marked NOT CERTIFIED. Random weights make coloured noise, not faces: MTCNN
finds none and alignment falls back to a centre crop. Real use needs a trained generator
and matcher weights (see README).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synthgen.pipeline import run_pipeline

N_CLASSES, PER_CLASS, PLANTED = 8, 6, 3


def _net(path: Path, seed: int):
    from synthgen.generators import write_random_generator

    if not path.exists():
        write_random_generator(path, "stylegan2-ada", seed, note="demo: random weights", z_dim=64, c_dim=N_CLASSES,
                               w_dim=64, img_resolution=32, mapping_layers=2, channel_base=1024, channel_max=64,
                               num_fp16_res=2, conv_clamp=256)
    return path


def _matcher(path: Path):
    import torch

    from synthgen.audit.matchers import IRESNET_LAYERS, IResNet

    if not path.exists():
        torch.manual_seed(0)
        torch.save(IResNet(IRESNET_LAYERS["r18"]).eval().state_dict(), path)
    return path


def run_demo(out="demo-run", progress=True, log=print) -> dict:
    from synthgen.alignment import AlignConfig, align
    from synthgen.generation import GenerateConfig, generate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = _net(out / "network.pt", seed=0)
    matcher = _matcher(out / "matcher.pth")
    auth_raw, auth = out / "authentic-raw", out / "authentic"
    if not (auth / "align.json").is_file():
        log("[demo] rendering a small 'authentic' set with a second random network")
        generate(GenerateConfig(network=str(_net(out / "authentic-network.pt", seed=1)), out=str(auth_raw),
                                per_class=PER_CLASS, seed=100, device="cpu", progress=progress))
        align(AlignConfig(inp=str(auth_raw), out=str(auth), on_miss="center-crop", device="cpu", progress=progress))
    config = {
        "out": str(out / "run"),
        "generate": {"network": str(net), "classes": "all", "per_class": PER_CLASS, "seed": 0, "psi": 1.0, "device": "cpu"},
        "align": {"size": 112, "on_miss": "center-crop", "device": "cpu"},
        "shard": {"shard_size": 20},
        "audit": {"authentic": str(auth), "matcher": "iresnet", "arch": "r18", "weights": str(matcher),
                  "fmr": 1e-3, "device": "cpu", "batch_size": 64},
        # the random matcher leaves the final audit inconclusive: release anyway, marked NOT CERTIFIED
        "release": {"enabled": True, "allow_inconclusive": True, "name": "synthgen-demo",
                    "license": "CC0-1.0 (random-weight demo data)", "generator_license": "random weights made by "
                    "synthgen demo (no training data)", "intended_use": "Showing the synthgen pipeline end to end. "
                    "The images are coloured noise from random weights: not faces, not for training."},
    }
    raw = out / "run" / "raw"
    # Plant authentic images into the synthetic set (after generation, before alignment). The
    # generate stage alone, with the run's own settings: `run` then finds it complete, and a
    # second demo finds every stage complete and redoes nothing.
    generate(GenerateConfig(**config["generate"], out=str(raw), progress=progress))
    for k in range(PLANTED):
        src = auth_raw / f"{k:06d}" / f"{k + 1:06d}.png"
        dst = raw / f"{k:06d}" / f"planted-{k}.png"
        if not dst.exists():
            shutil.copy(src, dst)
    record = run_pipeline(config, progress=progress, log=log)
    report = out / "run" / "audit" / "report.html"
    v = record["stages"]["audit"]["summary"]["verdict"]
    log("")
    log("Demo finished. The generator and the matcher have RANDOM weights: the images are coloured")
    log("noise and the scores say nothing about real faces. For real use, pass a trained StyleGAN2-ADA")
    log("checkpoint (e.g. SFace's .pkl) and real matcher weights; see README.")
    rep = json.loads((out / "run" / "audit" / "report.json").read_text())
    closest = [c["synthetic"] for c in rep["nearest"]["images"].get("closest", [])[:PLANTED]]
    log(f"Planted {PLANTED} authentic images into the synthetic set; the closest pairs found: {', '.join(closest)}.")
    log(f"Verdict: {v.get('status', 'n/a').upper()} ({v['flagged_images']} images and {v['flagged_identities']} "
        "identities flagged); why:")
    for reason in v.get("reasons", []):
        log(f"  - {reason}")
    log(f"Report: {report}")
    rel = out / "run" / "release"
    card = json.loads((rel / "card.json").read_text())
    import csv

    with open(rel / "quarantine.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    why: dict[str, int] = {}
    for row in rows:
        head = row["reason"].split(":")[0].split(" (")[0]
        why[head] = why.get(head, 0) + 1
    log("")
    log(f"Release: {card['status'].upper()}, {card['counts']['images']} images in {card['counts']['classes']} classes "
        f"-> {rel}")
    log(f"  {len(rows)} images removed or replaced (quarantine.csv): "
        + "; ".join(f"{n} {reason}" for reason, n in sorted(why.items())) + ".")
    if not card["certified"]:
        log("  Written with allow_inconclusive because the final audit is inconclusive; with a trained matcher and")
        log("  enough authentic images, a final verdict of pass would make it 'certified'.")
    log(f"  Check it: synthgen verify {rel}; rebuild it: synthgen rebuild {rel / 'card.json'} --network {net} "
        "--out rebuilt")
    return record

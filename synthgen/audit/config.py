"""AuditConfig: the audit's settings and their command-line form. Kept apart from the stage (report.py)
so that the CLI can build its options without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.options import opt

from .decision import FNMR_BOUND


@dataclass
class AuditConfig:
    synthetic: str = opt(metavar="PATH", help="Aligned synthetic set: folder tree or shard dir (.npz/.h5 with "
                         "--matcher embeddings).")
    authentic: str = opt(metavar="PATH", help="Aligned authentic set (e.g. the GAN's training data), same forms.")
    out: str = opt(path="dir", metavar="DIR", help="Report directory.")
    # facenet-vggface2 | facenet-casia | dlib | iresnet | onnx | embeddings | pixels, or a list of them
    # (the CLI's repeatable --matcher / --weights are written by hand: one flag, several values)
    matcher: str | list = "facenet-vggface2"
    weights: str | list | None = None  # matcher weights file (offline use); a list: one per matcher, in order
    arch: str = opt("r100", choices=("r18", "r34", "r50", "r100"), help="iResNet depth (--matcher iresnet).")
    fmr: float = opt(1e-3, metavar="RATE", help="Per-pair false-match rate that fixes the pairwise threshold.")
    threshold: float | None = opt(None, metavar="T", help="Explicit per-pair cosine threshold (implies --rule "
                                  "pairwise).")
    batch_size: int = opt(256, range=(1, None), metavar="N", help="Images per matcher call.")
    device: str = opt("auto", metavar="auto|cpu|cuda", help="Where to run the matcher and the search.")
    max_per_class: int | None = opt(None, range=(1, None), metavar="N", help="Use at most N images per identity.")
    top_k: int = opt(5, range=(1, None), metavar="K", help="Neighbours listed per flagged item.")
    max_pairs: int = 200_000  # cap on distinct sampled pairs per score distribution
    max_chance_queries: int = 20_000  # authentic queries of the leave-cluster-out null (the chance rate)
    label_map: str = opt("auto", choices=("auto", "name", "index"), help="How synthetic class i finds authentic "
                         "class i.")
    cache_dir: str | None = opt(None, path="dir", metavar="DIR", help="Embeddings cache [default: OUT/embeddings].")
    seed: int = 0  # pair sampling
    fail_on_leak: bool = opt(False, help="Release gate: exit 3 on a leak, 4 when inconclusive.")
    progress: bool = True
    rule: str | None = opt(None, choices=("search", "pairwise"), help="search: p-values against the leave-identity-"
                           "out null, Holm at --alpha [default]; pairwise: best score >= the per-pair --fmr/"
                           "--threshold threshold [default with --threshold].")
    alpha: float = opt(0.01, metavar="RATE", help="search rule: chance that a clean dataset gets any flag.")
    combine: str = opt("any", choices=("any", "all"), help="Several matchers: flag when any / all of them flag.")
    fnmr_bound: float = FNMR_BOUND  # matcher validity: FNMR at the operating score must not exceed this
    # sha256 of every synthetic image's pixels, in report.json dataset.synthetic.pixels_sha256 (the
    # release's audits set it: it binds what was audited to what is released)
    pixel_digest: bool = False

"""QualityConfig: the quality stage's settings and their command-line form (importable without
torch, so `synthgen --help` stays light)."""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.options import opt


def matcher_choices() -> tuple:
    """Registered matchers that read images (not `embeddings`), and `none` (no identity measures)."""
    from synthgen.audit.matchers import REGISTRY

    return ("none", *(m for m in REGISTRY if m != "embeddings"))


@dataclass
class QualityConfig:
    inp: str = opt(metavar="IN", help="Aligned folder (synthgen align --out, with its manifest.jsonl) or shard folder.")
    out: str = opt(path="dir", metavar="DIR", help="Where quality.csv, report.json and report.html go.")
    matcher: str = opt("dlib", choices=matcher_choices, help="Face matcher for the identity measures (none: skip "
                       "them; pixels: a test double, not a face matcher).")
    weights: str | None = opt(None, path="file", metavar="FILE", help="Matcher weights (as in synthgen audit).")
    arch: str = opt("r100", choices=("r18", "r34", "r50", "r100"), help="iResNet depth (--matcher iresnet).")
    batch_size: int = opt(256, range=(1, None), metavar="N", help="Images per matcher call.")
    device: str = opt("auto", metavar="auto|cpu|cuda", help="Where to run the matcher.")
    cache_dir: str | None = opt(None, path="dir", metavar="DIR", help="Embeddings cache, shared with synthgen audit "
                                "(pass AUDIT/embeddings to reuse an audit's embeddings of the same IN) "
                                "[default: OUT/embeddings].")
    serfiq: bool = opt(False, help="Also score each image with SER-FIQ, a learned quality score (stability under "
                       "dropout; facenet-casia or facenet-vggface2 only; about one more forward pass per image).")
    # filters (None: not applied); any one given also writes decisions.csv
    min_det_prob: float | None = opt(None, range=(0, 1), metavar="P", help="Filter: drop images whose detector "
                                     "probability is below P (fallback crops have none: dropped).")
    max_yaw: float | None = opt(None, range=(0, 90), metavar="DEG", help="Filter: drop images with |yaw| above DEG.")
    max_pitch: float | None = opt(None, range=(0, 90), metavar="DEG", help="Filter: drop images with |pitch| above DEG.")
    min_sharpness: float | None = opt(None, range=(0, None), metavar="S", help="Filter: drop images whose sharpness "
                                      "(variance of the Laplacian) is below S.")
    min_consistency: float | None = opt(None, range=(-1, 1), metavar="COS", help="Filter: drop images whose cosine to "
                                        "their class template is below COS (needs a matcher).")
    min_distinctness: float | None = opt(None, range=(0, 2), metavar="D", help="Filter: of classes closer than D in "
                                         "distinctness (1 - template cosine), keep one: a class goes when it is too "
                                         "close to one kept before it, in name order (needs a matcher).")
    min_serfiq: float | None = opt(None, range=(0, 1), metavar="Q", help="Filter: drop images whose SER-FIQ score "
                                   "is below Q (needs --serfiq).")
    no_fallback: bool = opt(False, help="Filter: drop fallback crops (no face was detected).")
    policy: str = opt("regenerate", choices=("regenerate", "drop"), help="In `synthgen run`, where the filters are "
                      "applied before sharding: re-render a dropped image from its next retry seed (class sizes kept) "
                      "or drop it. `synthgen quality` alone only records the decisions.")
    worst: int = opt(12, range=(1, 200), metavar="N", help="Worst images and classes shown in report.html.")
    overwrite: bool = opt(False, help="Replace an output folder made with a different config.")
    progress: bool = True

    RUNTIME_FIELDS = ("inp", "out", "batch_size", "device", "cache_dir", "overwrite", "progress",
                      "policy")  # policy: what synthgen run's apply does with the decisions (it hashes it)
    FILTER_FIELDS = ("no_fallback", "min_det_prob", "max_yaw", "max_pitch", "min_sharpness", "min_serfiq",
                     "min_consistency", "min_distinctness")

"""What `rebuild CARD` checks before it allocates or generates anything (issue 21, item 3).

A card is a small file that drives a large computation: its generate config says how many images
to render (classes x per_class, a seeds list, count x views), in network calls of how many samples
(forward_chunk), with how many retries, at what size. None of that is trusted. Each number must be
an integer in range, and the config must ask for the run the card's own counts describe:

- counts agree with themselves and with the card's lists: images = the sum of per_class, classes =
  the number of per_class entries = the number of labels, removed/replaced = the operations listed,
  original_images = images + removed_images, original_classes = classes + removed_classes, and the
  shards listed in `files` hold exactly `images` at the shard config's shard_size;
- rebuild.must_match agrees with the generate identity (generator sha256, device type, precision,
  forward chunk), and the forward chunk is the one the config resolves to, no larger than the run
  (or than the CUDA default, 256);
- the images the generate config plans are the images the run kept: at most original_images when
  nothing can be lost at alignment (no alignment, or an align stage that writes a fallback crop),
  at most MAX_LOSS times that when misses are dropped (align stage with on_miss skip, or
  generate --align, whose misses after max_retries are dropped);
- image sizes agree: the shards' image_size is the crop size (or the generator's resolution).

Every refusal is one line naming the card field, what it holds and what was expected.
"""

from __future__ import annotations

import math
import re

from synthgen.errors import DataError
from synthgen.safepath import show, show_path

MAX_LOSS = 4  # a run that drops misses may have planned up to 4x the images it kept (75 % misses)
MAX_RETRIES = 100  # generate --align: new seeds tried per image (default 10)
MAX_POOL = 1_000_000  # seed_pool values, unless the run planned more images than that
MAX_MIX_LAYERS = 1024
MAX_SIZE = 4096  # crop side / generator resolution, pixels
MAX_CLASSES = 1 << 20
SHARD_FILE = re.compile(r"shards/shard-\d+\.h5")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def list_size(text) -> tuple[int, int] | None:
    """(number of values, largest value) of a list like '0-99,120' without expanding it; None if
    it is not such a list."""
    if not isinstance(text, str) or not text.strip() or len(text) > 1_000_000:
        return None
    n, top = 0, -1
    for part in text.replace(" ", "").split(","):
        a, dash, b = part.partition("-")
        if not a.isdigit() or (dash and not b.isdigit()):
            return None
        lo, hi = int(a), int(b) if dash else int(a)
        if hi < lo:
            return None
        n, top = n + hi - lo + 1, max(top, hi)
    return n, top


class _Checker:
    def __init__(self, card: dict, path):
        self.card, self.path = card, path

    def refuse(self, field: str, got, expected: str):
        got = show(str(got)) if not _int(got) else f"{got:,}"
        raise DataError(f"{show_path(self.path)}: {field} is {got}, expected {expected}; use the card.json the "
                        "release wrote")

    def count(self, field: str, v, lo: int = 0, hi: int = 2**31 - 1):
        if not _int(v) or not lo <= v <= hi:
            self.refuse(field, v if _int(v) else f"{v!r} ({type(v).__name__})", f"an integer from {lo:,} to {hi:,}")
        return v


def check_rebuild_card(card: dict, path) -> None:
    """Raise DataError (one line) unless the card's generate config is bounded and is the run its
    own counts describe. Reads nothing but the card; allocates nothing the card's size does not bound."""
    from synthgen.generation.config import DEFAULT_CHUNK, MAX_CHUNK, MAX_ITEMS

    ck = _Checker(card, path)
    counts = card["counts"]
    ops = card["remediation"]["operations"]
    per_class = counts["per_class"]
    images = ck.count("counts.images", counts.get("images"), 0, MAX_ITEMS)
    classes = ck.count("counts.classes", counts.get("classes"))
    orig = ck.count("counts.original_images", counts.get("original_images"), 0, MAX_ITEMS)
    orig_classes = ck.count("counts.original_classes", counts.get("original_classes"))
    removed = ck.count("counts.removed_images", counts.get("removed_images"))
    replaced = ck.count("counts.replaced_images", counts.get("replaced_images"))
    if sum(per_class.values()) != images:
        ck.refuse("counts.images", images, f"the sum of counts.per_class ({sum(per_class.values()):,})")
    if classes != len(per_class) or classes != len(card["labels"]):
        ck.refuse("counts.classes", classes, f"the number of counts.per_class entries ({len(per_class):,}) and of "
                                             f"labels ({len(card['labels']):,})")
    n_rm = sum(1 for o in ops if o["op"] == "remove")
    if removed != n_rm:
        ck.refuse("counts.removed_images", removed, f"the {n_rm:,} remove operations in remediation.operations")
    n_rp = len(ops) - n_rm
    if replaced != n_rp:
        ck.refuse("counts.replaced_images", replaced, f"the {n_rp:,} replace operations in remediation.operations")
    if orig != images + removed:
        ck.refuse("counts.original_images", orig, f"images + removed_images ({images + removed:,})")
    rc = counts.get("removed_classes")
    if not isinstance(rc, list) or orig_classes != classes + len(rc):
        ck.refuse("counts.original_classes", orig_classes,
                  f"classes + the number of removed_classes ({classes + len(rc) if isinstance(rc, list) else '?'})")

    configs = card["configs"]
    shard_cfg = (configs.get("shard") or {}).get("config") or {}
    shard_size = ck.count("configs.shard.config.shard_size", shard_cfg.get("shard_size", 10000), 1)
    n_files = sum(1 for k in card["files"] if SHARD_FILE.fullmatch(k))
    want_files = math.ceil(images / shard_size)
    if n_files != want_files:
        ck.refuse("files", f"{n_files} shard files", f"{want_files:,} (counts.images {images:,} in shards of "
                                                      f"{shard_size:,})")

    gen = configs["generate"]
    c = gen["config"]
    ident = gen.get("identity") if isinstance(gen.get("identity"), dict) else {}
    mm = card["rebuild"].get("must_match")
    if not isinstance(mm, dict):
        ck.refuse("rebuild.must_match", type(mm).__name__, "an object")
    g = card["generator"]
    for key, a, b, bn in (("generator_sha256", mm.get("generator_sha256"), g.get("sha256"), "generator.sha256"),
                          ("generator_sha256", mm.get("generator_sha256"), ident.get("network_sha256"),
                           "configs.generate.identity.network_sha256"),
                          ("device_type", mm.get("device_type"), ident.get("device_type"),
                           "configs.generate.identity.device_type"),
                          ("precision", mm.get("precision"), ident.get("precision"), "configs.generate.identity.precision"),
                          ("forward_chunk", mm.get("forward_chunk"), ident.get("forward_chunk"),
                           "configs.generate.identity.forward_chunk")):
        if a != b:
            ck.refuse(f"rebuild.must_match.{key}", a, f"{bn} ({b if _int(b) else show(str(b))})")
    device = ident.get("device_type")
    if device not in DEFAULT_CHUNK:
        ck.refuse("configs.generate.identity.device_type", device, " or ".join(DEFAULT_CHUNK))
    if ident.get("precision") not in ("fp32", "fp16"):
        ck.refuse("configs.generate.identity.precision", ident.get("precision"), "fp32 or fp16")
    chunk = ck.count("configs.generate.identity.forward_chunk", ident.get("forward_chunk"), 1, MAX_CHUNK)
    asked = c.get("chunk_size")
    if asked is None and chunk != DEFAULT_CHUNK[device]:
        ck.refuse("configs.generate.identity.forward_chunk", chunk,
                  f"{DEFAULT_CHUNK[device]} (the {device} default, as configs.generate.config.chunk_size is null)")
    if asked is not None and asked != chunk:
        ck.refuse("configs.generate.config.chunk_size", asked, f"the identity's forward_chunk ({chunk})")

    # the plan: how many images the generate config renders
    c_dim = ck.count("generator.c_dim", g.get("c_dim"), 0, MAX_CLASSES)
    ck.count("generator.resolution", g.get("resolution"), 1, MAX_SIZE)
    ck.count("generator.z_dim", g.get("z_dim"), 1, 1 << 16)
    where = "configs.generate.config."

    def size_of(key, limit_top=None):
        v = c.get(key)
        if v is None:
            return None
        got = list_size(v)
        if got is None:
            ck.refuse(where + key, v, "a list of non-negative integers and ranges like 0-99,120")
        if limit_top is not None and got[1] > limit_top:
            ck.refuse(where + key, v, f"values up to {limit_top:,}")
        return got[0]

    n_seeds = size_of("seeds", 2**32 - 1)
    if c_dim:
        cl = c.get("classes", "all")
        n_cls = c_dim if cl in (None, "all") else size_of("classes", c_dim - 1)
        n = n_seeds if n_seeds is not None else ck.count(where + "per_class", c.get("per_class"), 1, MAX_ITEMS)
        planned, how, field = n_cls * n, f"{n_cls:,} classes x {n:,}", "seeds" if n_seeds is not None else "per_class"
    else:
        n = n_seeds if n_seeds is not None else ck.count(where + "count", c.get("count"), 1, MAX_ITEMS)
        views = ck.count(where + "views", c.get("views", 1), 1, MAX_ITEMS)
        planned, how = n * views, f"{n:,} instances x {views:,} views"
        field = "seeds" if n_seeds is not None else "count"
        size_of("mix_layers", MAX_MIX_LAYERS)
    inline = c.get("align") is True
    al = configs["align"]
    stage = al.get("mode") is None
    drops = inline or (stage and ((al.get("config") or {}).get("on_miss", "skip") == "skip"))
    most = orig * (MAX_LOSS if drops else 1)
    if planned > most:
        why = (f"the run kept {orig:,} (counts.original_images)" +
               (f" and dropped at most {MAX_LOSS - 1}x as many at alignment" if drops else
                " and its alignment drops nothing"))
        ck.refuse(where + field, c.get(field), f"a run of at most {most:,} images ({how} = {planned:,} asked for; {why})")
    most_chunk = max(max(DEFAULT_CHUNK.values()), planned)
    if chunk > most_chunk:  # every network call renders the whole chunk (padded)
        ck.refuse("configs.generate.identity.forward_chunk", chunk,
                  f"at most {most_chunk:,} (the run's {planned:,} images, or the CUDA default)")
    pool = size_of("seed_pool", 2**32 - 1)
    if pool is not None and pool > max(MAX_POOL, planned):
        ck.refuse(where + "seed_pool", c.get("seed_pool"), f"at most {max(MAX_POOL, planned):,} values")
    ck.count(where + "max_retries", c.get("max_retries", 10), 0, MAX_RETRIES)

    # image sizes: what the shards hold is what the alignment (or the generator) made
    if stage:
        side = ck.count("configs.align.config.size", (al.get("config") or {}).get("size"), 16, MAX_SIZE)
    elif inline:
        side = ck.count(where + "align_size", c.get("align_size", 112), 16, MAX_SIZE)
    else:
        side = g["resolution"]
    if (configs.get("shard") or {}).get("image_size") != [side, side]:
        ck.refuse("configs.shard.image_size", (configs.get("shard") or {}).get("image_size"), f"[{side}, {side}]")

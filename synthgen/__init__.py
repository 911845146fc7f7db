"""synthgen: build privacy-friendly synthetic face-recognition datasets and audit them.

Pipeline: generate -> align -> shard -> audit. Each stage is one function here and one thin
`synthgen <stage>` command:

    synthgen.generate(network=..., out=...)      synthgen.align(inp=..., out=...)
    synthgen.shard(inp=..., out=...)             synthgen.verify(dir)
    synthgen.run_audit(synthetic=..., authentic=..., out=...)
    synthgen.run_pipeline(config_dict)           synthgen.load_generator(path)
"""

__version__ = "0.1.0"

# The stage modules are `generation`, `alignment`, `shards`, so these names stay functions.
from synthgen.alignment import align  # noqa: E402
from synthgen.generation import generate  # noqa: E402
from synthgen.shards import shard, verify  # noqa: E402


def load_generator(path, device="cpu", force_fp32=False, precision="auto"):
    from synthgen.generators import load_generator as _load

    return _load(path, device=device, force_fp32=force_fp32, precision=precision)


def run_audit(cfg=None, **kwargs):
    from synthgen.audit.report import run_audit as _run

    return _run(cfg, **kwargs)


def run_pipeline(cfg, **kwargs):
    from synthgen.pipeline import run_pipeline as _run

    return _run(cfg, **kwargs)


__all__ = ["__version__", "align", "generate", "load_generator", "run_audit", "run_pipeline", "shard", "verify"]

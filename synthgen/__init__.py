"""synthgen: build privacy-friendly synthetic face-recognition datasets and audit them.

Pipeline: generate -> align -> shard -> audit. Each stage is one function here and one thin
`synthgen <stage>` command:

    synthgen.generate(network=..., out=...)      synthgen.align(inp=..., out=...)
    synthgen.shard(inp=..., out=...)             synthgen.verify(dir)
    synthgen.run_audit(synthetic=..., authentic=..., out=...)
    synthgen.run_pipeline(config_dict)           synthgen.load_generator(path)
"""

__version__ = "0.1.0"

# Lazy: `import synthgen` (and `synthgen --help`) loads no numpy, torch or stage module; each
# name below is imported on first use. The stage modules are `generation`, `alignment`,
# `shards`, so these names stay functions.
_API = {
    "generate": ("synthgen.generation", "generate"),
    "align": ("synthgen.alignment", "align"),
    "shard": ("synthgen.shards", "shard"),
    "verify": ("synthgen.shards", "verify"),
    "export": ("synthgen.export", "export"),
    "run_audit": ("synthgen.audit.report", "run_audit"),
    "run_pipeline": ("synthgen.pipeline", "run_pipeline"),
    "load_generator": ("synthgen.generators", "load_generator"),
}


def __getattr__(name):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'synthgen' has no attribute {name!r}")


__all__ = ["__version__", *_API]

"""synthgen: build privacy-friendly synthetic face-recognition datasets and audit them.

Pipeline: generate -> align -> shard -> audit. Each stage is one importable function
(`synthgen.generate`, ...) and one thin `synthgen <stage>` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "generate", "load_generator"]


def __getattr__(name):  # lazy, so `import synthgen` stays cheap (no torch import)
    if name == "generate":
        from synthgen.generate import generate

        return generate
    if name == "load_generator":
        from synthgen.generators import load_generator

        return load_generator
    raise AttributeError(f"module 'synthgen' has no attribute {name!r}")

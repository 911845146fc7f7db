"""`synthgen release`, `synthgen verify REL`, `synthgen rebuild CARD`: from an audited run to a
clean, documented, verifiable dataset release.

    config.py      ReleaseConfig, validation
    source.py      what the audited run says (read-only)
    remediate.py   flags -> actions; re-rendering replacements the way the run made its images
    stage.py       the remediate -> re-audit loop, the decision, writing REL
    card.py        card.json and DATASET_CARD.md
    verify.py      SHA256SUMS and `verify REL`
    rebuilder.py   `rebuild CARD`: regenerate a release from its card and prove it byte for byte
"""

from __future__ import annotations

_API = {"ReleaseConfig": "config", "release": "stage", "verify_release": "verify", "is_release": "verify",
        "rebuild": "rebuilder"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(name)

"""`synthgen quality`: what a dataset is, per image and per class, measured offline.

    config     QualityConfig (importable without torch)
    detection  what align recorded: found or fallback, probability, landmarks, face size
    pose       yaw, pitch, roll from the 5 landmarks (geometric, documented in the module)
    image      sharpness and exposure of a crop
    serfiq     SER-FIQ, a learned quality score from facenet's dropout
    identity   leave-one-out template cosines, class consistency and distinctness
    filters    thresholds -> one recorded decision per image (apply_filters)
    stage      measure(), summarize(), quality(): the stage
    html       report.html
"""

from .config import QualityConfig

_LAZY = {"quality": "stage", "measure": "stage", "summarize": "stage", "apply_filters": "filters",
         "head_pose": "pose", "image_measures": "image", "identity_measures": "identity"}


def __getattr__(name):  # the stage imports numpy and the audit's image sets: only on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["QualityConfig", *_LAZY]

"""`synthgen align`: MTCNN 5-point landmarks -> similarity transform -> aligned crop.

Modules: geometry (templates, Umeyama fit, warp), detectors (protocol, registry, MTCNN, the
parity test double, detect_and_align), stage (the align run: config, journal, workers).
"""

from .detectors import (DETECTORS, MTCNNDetector, ParityDetector, detect_and_align, detect_any_size, make_detector,
                        select_face)
from .geometry import (ARCFACE_112, TEMPLATES, apply_transform, fallback_matrix, load_template, residual,
                       similarity_transform, warp)
from .stage import ALIGN_JSON, JOURNAL, STATUSES, AlignConfig, align, process_batch, validate_config

__all__ = ["ALIGN_JSON", "ARCFACE_112", "DETECTORS", "JOURNAL", "STATUSES", "TEMPLATES", "AlignConfig", "MTCNNDetector",
           "ParityDetector", "align", "apply_transform", "detect_and_align", "detect_any_size", "fallback_matrix",
           "load_template", "make_detector", "process_batch", "residual", "select_face", "similarity_transform",
           "validate_config", "warp"]

"""`synthgen evaluate`: verification accuracy on the field's benchmarks, the way the field computes it.

    bench.py      insightface .bin files (read with synthgen's own pickle reader: nothing runs),
                  LFW-style folders with pairs.txt, make_pairs (a .bin from identity folders)
    protocol.py   insightface's 10-fold accuracy (flip-summed embeddings), TAR@FAR with exact intervals
    stage.py      EvaluateConfig, evaluate(): embed, score, write report.json / embeddings.npz / report.html
    html.py       the self-contained report page
"""

from .bench import make_pairs, read_bench
from .stage import EvaluateConfig, evaluate

__all__ = ["EvaluateConfig", "evaluate", "make_pairs", "read_bench"]

"""What every exporter shares."""

from __future__ import annotations

from pathlib import Path


def fresh(tmp: Path) -> Path:
    """Remove whatever sits at a temp name first: in a reused --out it could be a planted symlink
    (the name is predictable), and opening it for writing would follow the link out of --out."""
    tmp.unlink(missing_ok=True)
    return tmp



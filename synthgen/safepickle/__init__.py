"""Reading pickles without running them: an opcode interpreter that builds plain data only.

    vm.py        PickleVM: interprets protocol 2-5 opcodes; globals go through the caller's table
    opcodes.py   the opcodes it knows (every other one is refused)
    limits.py    graph limits (depth, cycles), hashable keys, one-line display of file values

Used for NVIDIA's StyleGAN2-ADA pickles (synthgen.generators.stylegan2ada) and insightface's
verification `.bin` files (synthgen.evaluate).
"""

from .limits import escape, hashable, show
from .vm import PickleVM, _Global

__all__ = ["PickleVM", "_Global", "escape", "hashable", "show"]

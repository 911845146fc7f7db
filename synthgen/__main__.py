"""`python -m synthgen ...` (e.g. `torchrun --nproc_per_node 8 -m synthgen generate ...`)."""

import sys

from synthgen.cli.entry import main

sys.exit(main())

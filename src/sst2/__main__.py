"""``python -m sst2``: the ``sst2`` command, e.g. under torchrun (``torchrun --nproc-per-node 2 -m sst2 train``)."""

import sys

from sst2.cli import main

sys.exit(main())

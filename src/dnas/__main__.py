"""``python -m dnas ...`` (and ``torchrun -m dnas ...``): the ``dnas`` command line."""

import sys

from dnas.cli import main

sys.exit(main())

"""``python -m trajmoe``: the ``trajmoe`` command line (:func:`trajmoe.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m hyperloss``: the same as the ``hyperloss`` command."""

import sys

from hyperloss.cli import main

if __name__ == "__main__":
    sys.exit(main())

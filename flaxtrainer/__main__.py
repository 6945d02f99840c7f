"""`python -m flaxtrainer ...` runs the `flaxtrainer` console script."""

import sys

from flaxtrainer.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

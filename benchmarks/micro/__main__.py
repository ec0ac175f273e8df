"""``python -m benchmarks.micro ...``: the same as ``python -m benchmarks micro ...`` (``runner.py``)."""

import sys

from benchmarks import cli

if __name__ == "__main__":
    sys.exit(cli.alias("micro"))

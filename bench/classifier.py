"""Classifier benchmark: ours vs birder's model-card path, side by side in one process.

The implementation lives in `camtrap.tools.benchmark` so that the installed `camtrap bench
classifier` runs it too; this is the same command, with the CLI's error messages:

    python -m bench.classifier [--device cpu] [--patch 16 24] [--batch 16] [--json]
"""

import sys

from camtrap.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "classifier", *sys.argv[1:]]))

#!/usr/bin/env python3
"""Download lea-local's models (same as `lea-local models`).

usage: scripts/download_models.py --preset tiny --models-dir models [--verify | --list]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lea_local.catalog.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""Shared pytest setup: headless matplotlib, quiet progress bars, the repo on sys.path."""

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MINIALIGN_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

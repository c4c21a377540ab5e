"""What the in-process benchmarks share: the project on sys.path, Django's
settings module, where results go, and filler words for generated text."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"

# Words that generated messages, names and descriptions are made of.
_PARAGRAPH = (
    "garden river budget invoice meeting travel python kernel summary rocket "
    "violin harbour pepper lantern quarter orbit ledger canvas meadow signal "
    "thunder almond copper falcon marble nectar pillow saddle timber velvet "
    "tutor recipe fitness poetry contract physics chess history marketing"
)
WORDS = _PARAGRAPH.split()


def django_path_setup() -> None:
    """Make the project importable and pick its settings (call before
    importing Django code)."""
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

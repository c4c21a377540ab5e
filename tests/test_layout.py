"""The house rules that keep the project importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def top_level_packages() -> list[str]:
    return sorted(
        p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    )


def test_it_has_the_house_packages() -> None:
    assert {"config", "core", "assistants", "tools", "sandbox", "tests"} <= set(
        top_level_packages()
    )


def test_no_top_level_package_shadows_a_stdlib_module() -> None:
    # A package named `platform` once broke uuid, Celery and pytest on 3.11.
    clashes = [n for n in top_level_packages() if n in sys.stdlib_module_names]
    assert clashes == []

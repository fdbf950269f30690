"""The installed distribution holds every package of the repository (pyproject's ``packages.find``)."""

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_top_level_package_is_installed_by_pyproject():
    """A package missing from ``include`` imports from the repo root only, not after ``pip install``."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name != "tests")
    assert {"nvae_ecg", "pulse2pulse", "train_test", "sssd_ecg", "cvae_ecg"} <= set(packages)
    missing = [p for p in packages if not any(fnmatch.fnmatch(p, pat) for pat in include)]
    assert not missing, f"pyproject.toml [tool.setuptools.packages.find] include lacks {missing}"

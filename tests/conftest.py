"""Shared pytest fixtures: the real Challenge 2021 sample folder (skipped when absent) and small demo data.

The 35 real sample records live outside the repository, in
``../shared/data/challenge2021-sample`` (override with ``CHALLENGE_SAMPLE_DIR``);
tests that need them take the ``sample_dir`` fixture and are skipped with a
reason when the folder is missing. ``synthetic_raw`` writes a small synthetic data
set in the Challenge layout once per session and ``prepared_ptbxl`` prepares its PTB-XL part once.
Add further shared fixtures here.

Example::

    CHALLENGE_SAMPLE_DIR=/path/to/challenge2021-sample pytest tests -q
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SAMPLE_ENV = "CHALLENGE_SAMPLE_DIR"


def sample_data_dir() -> Path:
    """Location of the real Challenge 2021 sample records (env CHALLENGE_SAMPLE_DIR or ../shared/data/...)."""
    env = os.environ.get(SAMPLE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data/challenge2021-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real sample folder; skips the test when it is absent."""
    path = sample_data_dir()
    if not (path / "ptb-xl").is_dir():
        pytest.skip(f"Challenge 2021 sample data not found at {path} (set {SAMPLE_ENV} to its location)")
    return path


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A small synthetic Challenge-layout raw folder (60 PTB-XL, 30 Georgia, 30 Ningbo records, seed 0)."""
    synthetic = pytest.importorskip("nvae_ecg.data.synthetic", reason="nvae_ecg.data.synthetic is not available")
    out = tmp_path_factory.mktemp("synthetic_raw")
    synthetic.make_dataset(out, n_ptbxl=60, n_georgia=30, n_ningbo=30, seed=0, workers=1)
    return out


@pytest.fixture(scope="session")
def prepared_ptbxl(synthetic_raw, tmp_path_factory) -> Path:
    """``synthetic_raw``'s PTB-XL part, prepared once per session (``prepare --datasets ptb-xl``)."""
    from nvae_ecg.data import prepare

    out = tmp_path_factory.mktemp("prepared_ptbxl")
    prepare.main(prepare.parse_args([str(synthetic_raw), str(out), "--workers", "1", "--datasets", "ptb-xl"]))
    assert (out / "ptb-xl" / "signals.npy").is_file()
    return out


@pytest.fixture(scope="session")
def prepared_demo90(tmp_path_factory) -> Path:
    """90 PTB-XL demo records (seed 3), prepared once per session; the trainer/sampler tests read it, none writes."""
    from nvae_ecg.data import prepare, synthetic

    root = tmp_path_factory.mktemp("demo90")
    synthetic.main(synthetic.parse_args([str(root / "raw"), "--n_ptbxl", "90", "--n_georgia", "12",
                                         "--n_ningbo", "12", "--seed", "3", "--workers", "1"]))
    prepare.main(prepare.parse_args([str(root / "raw"), str(root / "prepared"), "--workers", "1",
                                     "--datasets", "ptb-xl"]))
    return root / "prepared"

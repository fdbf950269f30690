"""The shell entry points: syntax, strict mode, and the quickstart smoke run (QUICK=1) end to end."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_and_parses(script):
    text = script.read_text()
    assert "set -euo pipefail" in text, f"{script.name} must use strict mode"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_quickstart_smoke(tmp_path):
    env = dict(os.environ, QUICK="1", SKIP_SETUP="1", PYTHON=sys.executable)
    # Run from an unrelated working directory: scripts must not depend on it.
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), str(tmp_path / "qs")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("done:")
    qs = tmp_path / "qs"
    assert (qs / "runs" / "cnvae_tiny" / "checkpoints" / "latest.pt").is_file()
    for task in ("imbalance", "addition"):
        sig = np.load(qs / "generated" / f"cnvae_{task}" / "signals.npy", mmap_mode="r")
        assert sig.shape[1:] == (12, 5000) and sig.shape[0] > 0
    assert (qs / "example_generated.png").stat().st_size > 10_000

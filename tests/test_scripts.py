"""The shell entry points: syntax, strict mode, and the quickstart smoke run (QUICK=1) end to end."""

import json
import os
import re
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


@pytest.mark.slow
def test_quickstart_smoke(tmp_path):
    """QUICK=1 WITH_2D=1: every stage runs (data, prepare, four generators, generation, both benchmarks, quality
    report, report), ~2-4 min."""
    env = dict(os.environ, QUICK="1", WITH_2D="1", SKIP_SETUP="1", PYTHON=sys.executable, DEVICE="cpu")
    # Run from an unrelated working directory: scripts must not depend on it.
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), str(tmp_path / "qs")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    qs = tmp_path / "qs"
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"done: report at {qs / 'report' / 'report.md'}"
    for k in range(1, 11):
        assert any(line.startswith(f"[{k}/10] ") for line in lines), f"stage {k} did not announce itself"
    gens = ("cnvae", "nvae2d", "wavegan_star", "pulse2pulse")
    for gen in gens:
        assert (qs / "runs" / gen / "checkpoints" / "latest.pt").is_file()
        for task in ("imbalance", "addition"):
            meta = json.loads((qs / "generated" / f"{gen}_{task}" / "meta.json").read_text())
            assert meta["generator"] == gen and meta["task_type"] == task
            sig = np.load(qs / "generated" / f"{gen}_{task}" / "signals.npy", mmap_mode="r")
            assert sig.shape[1:] == (12, 5000) and sig.shape[0] > 0 and np.isfinite(sig[:4]).all()
    cells = json.loads((qs / "results" / "enrich_train" / "enrich_train.json").read_text())["cells"].values()
    assert {(c["generator"], c["task_type"]) for c in cells} == {("baseline", "none")} | {
        (g, t) for g in gens for t in ("addition", "imbalance")}
    assert {c["proportion"] for c in cells if c["generator"] != "baseline"} == {0.1, 0.2}
    cells = json.loads((qs / "results" / "enrich_pretrain" / "enrich_pretrain.json").read_text())["cells"].values()
    assert {c["target"] for c in cells} == {"georgia", "ningbo"}
    assert {c["arm"] for c in cells} == {"none", "real", *gens}
    report = (qs / "report" / "report.md").read_text()
    for heading in ("Training-set enrichment", "Table VI (Georgia)", "Table VII (Ningbo)", "12-lead ECGs per class",
                    "nearest real training ECG", "One heartbeat of lead I", "Heart rate per class",
                    "Synthetic-ECG quality"):
        assert heading in report, heading
    pngs = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert {"enrich_train_addition.png", "enrich_pretrain_ningbo.png", "heart_rate.png", "heartbeat_lead_I.png",
            "nearest_cnvae.png", "ecg_STach_real.png", "ecg_SB_pulse2pulse.png"} <= set(pngs)
    quality = json.loads((qs / "results" / "quality" / "quality.json").read_text())
    assert set(gens) <= set(json.dumps(quality).split('"'))  # every generator is evaluated
    assert any(Path(name).name.startswith("quality_") for name in pngs)  # linked from results/quality
    for name in pngs:
        assert (qs / "report" / name).stat().st_size > 10_000, name

"""sssd_ecg.diagnose: the label-reliance scores tell a denoiser that ignores its labels from one that uses them."""

import json
from pathlib import Path

import pytest
import torch

from sssd_ecg.config import get_config
from sssd_ecg.diagnose import label_reliance, main, parse_args
from sssd_ecg.diffusion import Diffusion
from sssd_ecg.model import build_model

DEMO = Path(__file__).resolve().parents[1] / "sssd_ecg" / "demo" / "sssd_ecg_demo.pt"


def _model(seed: int, label_scale: float):
    torch.manual_seed(seed)
    m = build_model(get_config("tiny", length=64)).eval()
    torch.nn.init.normal_(m.zero_conv.weight, std=0.1)  # the published init predicts exactly 0 for any label
    with torch.no_grad():
        m.embedding.weight.mul_(label_scale)
    return m


def test_label_reliance_is_one_without_label_information_and_above_one_with_it():
    x = torch.randn(6, 8, 64)
    y = torch.eye(9)[:6]
    diff = Diffusion(200)
    deaf = label_reliance(_model(0, 0.0), diff, x, y, [0, 100, 199], seed=3)
    assert [r["t"] for r in deaf] == [0, 100, 199]
    for r in deaf:
        assert r["mse_true"] == r["mse_shuffled"] == r["mse_zero"]
        assert r["shuffled_over_true"] == 1.0
    hearing = label_reliance(_model(0, 5.0), diff, x, y, [100], seed=3)[0]
    assert hearing["mse_true"] != hearing["mse_shuffled"]


def test_label_reliance_rejects_a_step_outside_the_chain_and_a_single_ecg():
    m, diff = _model(0, 1.0), Diffusion(200)
    with pytest.raises(ValueError, match="outside"):
        label_reliance(m, diff, torch.randn(2, 8, 64), torch.eye(9)[:2], [200])
    with pytest.raises(ValueError, match="at least 2"):
        label_reliance(m, diff, torch.randn(1, 8, 64), torch.eye(9)[:1], [0])


def test_cli_scores_the_demo_checkpoint_on_prepared_data(prepared_ptbxl, tmp_path, capsys):
    out = tmp_path / "diag.json"
    assert main(parse_args(["--checkpoint", str(DEMO), "--data_dir", str(prepared_ptbxl),
                            "--n", "4", "--steps", "20,199", "--json", str(out)])) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["t"] for r in rows] == [20, 199] and all(r["mse_true"] > 0 for r in rows)
    assert "shuffled/true" in capsys.readouterr().out


def test_cli_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(parse_args(["--checkpoint", str(tmp_path / "none.pt"), "--data_dir", str(tmp_path)]))

"""SSSD-ECG trained on demo data (tiny preset): run folder, checkpoint, mid-epoch bit-for-bit resume, generation
of 12 x 5000 ECGs in the shared format."""

import json

import numpy as np
import pytest
import torch

from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.leads import limb_identity_error
from nvae_ecg.samples import read_samples
from sssd_ecg import generate, train


def _args(prepared, root, save, *extra):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny", "--batch_size", "8",
        "--max_steps", "6", "--num_workers", "0", "--seed", "5", "--log_every", "1", "--sample_every", "0",
        "--save_every", "2", "--quality_every", "0", *extra])


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(prepared_ptbxl, tmp_path_factory):
    root = tmp_path_factory.mktemp("sssd_runs")
    assert train.main(_args(prepared_ptbxl, root, "straight")) == 0
    return root


def test_paper_defaults_of_the_command_line(tmp_path):
    a = train.parse_args(["--data_dir", str(tmp_path)])
    assert (a.batch_size, a.max_steps, a.learning_rate, a.config, a.save) == (6, 100_000, 2e-4, "paper", "sssd_ecg")
    cfg = train.build_config(a, 9)
    assert (cfg.length, cfg.amplitude, cfg.num_steps, cfg.num_res_layers) == (1000, "pm1", 200, 36)
    native = train.build_config(train.parse_args(["--data_dir", "x", "--length", "5000"]), 9)
    assert native.length == 5000 and abs(native.dt_min - 2e-4) < 1e-15 and abs(native.dt_max - 0.02) < 1e-15


def test_run_folder_checkpoint_and_resume_bit_for_bit(prepared_ptbxl, trained):
    run = trained / "straight"
    assert (run / "args.json").is_file() and (run / "log.txt").is_file() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "step_0000002.pt").is_file()
    a = _ckpt(run / "checkpoints" / "latest.pt")
    assert a["kind"] == train.CHECKPOINT_KIND and a["generator"] == "sssd_ecg" and a["step"] == 6
    assert a["classes"] == list(CLASS_ABBREVS) and a["config"]["length"] == 1000
    assert (a["epoch"], a["batch_in_epoch"]) == (1, 2)  # 37 ECGs / batch 8 = 4 steps per epoch
    assert "loss" in (run / "log.txt").read_text()
    assert train.main(_args(prepared_ptbxl, trained, "killed", "--max_steps", "3")) == 0
    half = _ckpt(trained / "killed" / "checkpoints" / "latest.pt")
    assert (half["epoch"], half["batch_in_epoch"], half["step"]) == (0, 3, 3)
    assert train.main(_args(prepared_ptbxl, trained, "killed", "--resume")) == 0
    b = _ckpt(trained / "killed" / "checkpoints" / "latest.pt")
    assert b["step"] == 6
    assert any(not torch.equal(half["model"][k], b["model"][k]) for k in b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    assert train.main(_args(prepared_ptbxl, trained, "straight")) == 2  # refuses to overwrite a run


def test_generates_twelve_lead_ecgs_in_the_shared_format(trained, tmp_path):
    out = tmp_path / "sssd_ecg_custom"
    args = generate.parse_args(["--checkpoint", str(trained / "straight" / "checkpoints" / "latest.pt"),
                                "--task_type", "custom", "--labels", "SR", "--count", "2", "--labels", "AF,LAD",
                                "--count", "1", "--batch_size", "2", "--device", "cpu", "--out_dir", str(out)])
    assert generate.main(args) == 0
    s = read_samples(out)
    assert s.signals.shape == (3, 12, 5000) and np.isfinite(s.signals).all()
    assert s.meta["generator"] == "sssd_ecg" and s.meta["denoising_steps"] == 200 and s.meta["model_fs"] == 100
    assert s.labels[:, CLASS_ABBREVS.index("SR")].tolist() == [1, 1, 0]
    assert limb_identity_error(np.asarray(s.signals, dtype=np.float64)) < 1e-4
    assert json.loads((out / "meta.json").read_text())["counts"] == {"SR": 2, "LAD+AF": 1}
    with pytest.raises(ValueError, match="not an SSSD-ECG checkpoint"):
        torch.save({"model": {}, "config": {}, "kind": "pulse2pulse-gan"}, tmp_path / "gan.pt")
        generate.load_generator(tmp_path / "gan.pt", torch.device("cpu"))

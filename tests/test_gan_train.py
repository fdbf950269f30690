"""GAN baselines trained on demo data: run folder, checkpoints, mid-epoch bit-for-bit resume, NaN and time-budget stops."""

import pytest
import torch

from nvae_ecg.classes import CLASS_ABBREVS
from pulse2pulse import train


@pytest.fixture(scope="module")
def prepared(prepared_ptbxl):
    return prepared_ptbxl


def _args(prepared, root, save, model="wavegan_star", *extra):
    return train.parse_args([
        "--model", model, "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny",
        "--batch_size", "8", "--epochs", "2", "--num_workers", "0", "--seed", "5", "--log_every", "1",
        "--n_critic", "2", "--sample_every", "0", "--save_every", "1", *extra])


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("gan_runs")
    assert train.main(_args(prepared, root, "straight")) == 0
    return root


def test_paper_defaults_of_the_command_line(tmp_path):
    a = train.parse_args(["--model", "pulse2pulse", "--data_dir", str(tmp_path)])
    assert (a.epochs, a.batch_size, a.n_critic, a.gp_weight) == (1200, 32, 5, 10.0)
    assert (a.learning_rate, a.beta1, a.beta2, a.config, a.save) == (1e-4, 0.5, 0.9, "paper", "pulse2pulse")
    assert train.parse_args(["--model", "wavegan_star", "--data_dir", "x"]).epochs == 1350
    assert train.parse_args(["--model", "wavegan_star", "--data_dir", "x", "--time_budget_hours", "2"]).max_hours == 2


def test_run_folder_and_checkpoint(trained):
    run = trained / "straight"
    assert (run / "args.json").is_file() and (run / "log.txt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "epoch_0001.pt").is_file() and (run / "checkpoints" / "epoch_0002.pt").is_file()
    ckpt = _ckpt(run / "checkpoints" / "latest.pt")
    assert ckpt["kind"] == train.CHECKPOINT_KIND and ckpt["generator"] == "wavegan_star"
    assert ckpt["epoch"] == 2 and ckpt["batch_in_epoch"] == 0 and ckpt["classes"] == list(CLASS_ABBREVS)
    assert ckpt["step"] == 2 * 4 and ckpt["g_step"] == ckpt["step"] // 2  # 37 ECGs / batch 8 = 4 steps/epoch
    assert ckpt["config"]["model_size"] == 20 and len(ckpt["bounds"]["lower"]) == 8
    log = (run / "log.txt").read_text()
    assert " W " in log and " GP " in log and "steps/s" in log


def test_resume_mid_epoch_is_bit_for_bit(prepared, trained):
    root = trained
    assert train.main(_args(prepared, root, "killed", "wavegan_star", "--max_steps", "3")) == 0
    half = _ckpt(root / "killed" / "checkpoints" / "latest.pt")
    assert half["epoch"] == 0 and half["batch_in_epoch"] == 3 and half["step"] == 3
    assert train.main(_args(prepared, root, "killed", "wavegan_star", "--resume")) == 0
    a = _ckpt(root / "straight" / "checkpoints" / "latest.pt")
    b = _ckpt(root / "killed" / "checkpoints" / "latest.pt")
    assert (a["step"], a["g_step"]) == (b["step"], b["g_step"])
    assert any(not torch.equal(half["model"][k], b["model"][k]) for k in b["model"])  # the resumed run trained
    for part in ("model", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k, v in a["optimizer_d"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer_d"]["state"][k]["exp_avg_sq"])


def test_refuses_to_overwrite_a_run_and_checks_the_model(prepared, trained):
    assert train.main(_args(prepared, trained, "straight")) == 2
    with pytest.raises(SystemExit, match="wavegan_star model"):
        train.main(_args(prepared, trained, "straight", "pulse2pulse", "--resume"))


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(prepared, tmp_path, monkeypatch):
    from pulse2pulse import wgan

    real = wgan.critic_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] >= 5:  # first step of epoch 2, after epoch 1's checkpoint
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(wgan, "critic_loss", poisoned)  # what train_step calls
    assert train.main(_args(prepared, tmp_path, "nan")) == 3
    ckpt = _ckpt(tmp_path / "nan" / "checkpoints" / "latest.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert all(torch.isfinite(v).all() for v in ckpt["discriminator"].values())
    assert "non-finite loss" in (tmp_path / "nan" / "log.txt").read_text()


def test_time_budget_cuts_the_run_and_resume_respects_it(prepared, tmp_path):
    assert train.main(_args(prepared, tmp_path, "budget", "wavegan_star", "--max_hours", "1e-9")) == 0
    ckpt = _ckpt(tmp_path / "budget" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 1 and ckpt["batch_in_epoch"] == 1  # stopped at the first check
    assert ckpt["train_seconds"] > 0
    assert "time budget" in (tmp_path / "budget" / "log.txt").read_text()
    assert train.main(_args(prepared, tmp_path, "budget", "wavegan_star", "--max_hours", "1e-9", "--resume")) == 0
    assert _ckpt(tmp_path / "budget" / "checkpoints" / "latest.pt")["step"] == 1  # the budget is already spent

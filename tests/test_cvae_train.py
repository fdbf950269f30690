"""The CVAE trained on demo data: run folder and checkpoint, mid-epoch bit-for-bit resume, refusals, the NaN stop,
and generation with given or drawn demographics stored beside the samples (conditions.npy)."""

import json

import numpy as np
import pytest
import torch

from cvae_ecg import generate, train
from nvae_ecg.samples import read_samples


def _args(prepared, root, save, *extra, condition="both"):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--condition", condition,
        "--batch_size", "8", "--epochs", "2", "--num_workers", "0", "--seed", "5", "--log_every", "1",
        "--sample_every", "0", "--quality_every", "0", "--save_every", "1", "--device", "cpu", *extra])


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(prepared_demo90, tmp_path_factory):
    root = tmp_path_factory.mktemp("cvae_runs")
    assert train.main(_args(prepared_demo90, root, "straight")) == 0
    return root


def test_reference_defaults_of_the_command_line(tmp_path):
    a = train.parse_args(["--data_dir", str(tmp_path)])
    assert (a.learning_rate, a.batch_size, a.epochs, a.beta1, a.beta2, a.adam_eps) == (1e-3, 32, 300, 0.9, 0.999, 1e-7)
    assert (a.config, a.condition, a.kl_weight, a.rec_weight, a.save) == ("ecg", "demographics", 1.0, 1.0, "cvae_ecg")
    with pytest.raises(SystemExit):
        train.parse_args(["--data_dir", str(tmp_path), "--config", "paper"])
    with pytest.raises(SystemExit):
        train.parse_args(["--data_dir", str(tmp_path), "--condition", "bmi"])


def test_run_folder_and_checkpoint(trained):
    run = trained / "straight"
    assert (run / "args.json").is_file() and (run / "log.txt").is_file() and list(run.glob("events.out.tfevents.*"))
    assert json.loads((run / "args.json").read_text())["condition"] == "both"
    ckpt = _ckpt(run / "checkpoints" / "latest.pt")
    assert (ckpt["kind"], ckpt["generator"], ckpt["condition"]) == (train.CHECKPOINT_KIND, "cvae_ecg", "both")
    assert ckpt["config"]["condition_dim"] == 4 + 9 and ckpt["config"]["length"] == 5000
    assert ckpt["epoch"] == 2 and ckpt["batch_in_epoch"] == 0 and ckpt["step"] == 2 * 6  # 55 ECGs / 8, last dropped
    assert set(ckpt["demographics"]) >= {"age_mean", "age_std"} and 30 < ckpt["demographics"]["age_mean"] < 90
    assert len(ckpt["bounds"]["lower"]) == 8 and (run / "checkpoints" / "epoch_0001.pt").is_file()
    log = (run / "log.txt").read_text()
    assert "parameters: 576200" in log and "val loss" in log and " KL " in log
    # Amplitude "standard": the per-lead statistics of the training ECGs are fitted once and stored in the model.
    mean, std = ckpt["model"]["data_mean"].double(), ckpt["model"]["data_std"].double()
    assert ckpt["config"]["amplitude"] == "standard" and "amplitude standard" in log
    assert bool(((mean > 0.05) & (mean < 0.95)).all()) and bool(((std > 0.005) & (std < 0.5)).all())


def test_lead_statistics_are_the_per_lead_moments(prepared_demo90):
    ds = train.DemographicDataset(prepared_demo90, "ptb-xl", split="train")
    mean, std = train.lead_statistics(ds)
    xs = np.stack([ds[i][0].double().numpy() for i in range(len(ds))])
    np.testing.assert_allclose(mean, xs.mean((0, 2)), rtol=1e-9)
    np.testing.assert_allclose(std, xs.std((0, 2)), rtol=1e-6)


def test_resume_mid_epoch_is_bit_for_bit(prepared_demo90, trained):
    root = trained
    assert train.main(_args(prepared_demo90, root, "killed", "--max_steps", "3")) == 0
    half = _ckpt(root / "killed" / "checkpoints" / "latest.pt")
    assert (half["epoch"], half["batch_in_epoch"], half["step"]) == (0, 3, 3)
    assert train.main(_args(prepared_demo90, root, "killed", "--resume")) == 0
    a = _ckpt(root / "straight" / "checkpoints" / "latest.pt")
    b = _ckpt(root / "killed" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"]
    assert any(not torch.equal(half["model"][k], b["model"][k]) for k in b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # weights and batch-norm statistics
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])


def test_refusals(prepared_demo90, trained):
    assert train.main(_args(prepared_demo90, trained, "straight")) == 2  # exists, no --resume
    with pytest.raises(SystemExit, match="conditioned on both"):
        train.main(_args(prepared_demo90, trained, "straight", "--resume", condition="demographics"))


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(prepared_demo90, tmp_path, monkeypatch):
    real = train.cvae_loss
    monkeypatch.setattr(train, "cvae_loss", lambda *a, **k: tuple(t * float("nan") for t in real(*a, **k)))
    assert train.main(_args(prepared_demo90, tmp_path, "nan")) == 3
    assert not (tmp_path / "nan" / "checkpoints" / "latest.pt").exists()


def _gen(ckpt, out, *extra):
    return generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--out_dir", str(out), "--device", "cpu",
                                              "--batch_size", "4", "--seed", "0", *extra]))


def test_generates_with_given_demographics_stored_beside_the_samples(trained, tmp_path):
    ckpt = trained / "straight" / "checkpoints" / "latest.pt"
    assert _gen(ckpt, tmp_path / "fixed", "--task_type", "custom", "--labels", "AF", "--count", "3",
                "--labels", "SR", "--count", "2", "--age", "70", "--sex", "F") == 0
    s = read_samples(tmp_path / "fixed")
    assert s.signals.shape == (5, 12, 5000) and np.isfinite(s.signals).all()
    assert s.meta["generator"] == "cvae_ecg" and s.meta["condition"] == "both"
    assert s.meta["demographics"]["mode"] == "fixed" and s.meta["demographics"]["file"] == "conditions.npy"
    assert s.conditions["age"].tolist() == [70.0] * 5 and s.conditions["sex"].tolist() == ["F"] * 5
    # The requested demographics reach the decoder: a different age and sex gives different ECGs.
    assert _gen(ckpt, tmp_path / "other", "--task_type", "custom", "--labels", "AF", "--count", "3",
                "--labels", "SR", "--count", "2", "--age", "30", "--sex", "M") == 0
    assert not np.allclose(read_samples(tmp_path / "other").signals, s.signals)


def test_default_draws_demographics_from_the_training_split(prepared_demo90, trained, tmp_path):
    from nvae_ecg.demographics import training_records, record_demographics

    ckpt = trained / "straight" / "checkpoints" / "latest.pt"
    args = ("--data_dir", str(prepared_demo90), "--task_type", "custom", "--labels", "SR", "--count", "6")
    assert _gen(ckpt, tmp_path / "drawn", *args) == 0
    c = read_samples(tmp_path / "drawn").conditions
    records, labels = training_records(prepared_demo90, "ptb-xl")
    ages, sexes = record_demographics(records)
    sr_only = (labels == np.eye(9, dtype=labels.dtype)[0]).all(axis=1)
    pairs = set(zip(ages[sr_only].tolist(), sexes[sr_only].tolist()))
    assert len(c) == 6 and set(zip(c["age"].astype(float).tolist(), c["sex"].tolist())) <= pairs
    assert _gen(ckpt, tmp_path / "drawn2", *args) == 0  # seeded: the same draw again
    assert np.array_equal(read_samples(tmp_path / "drawn2").conditions, c)
    assert _gen(ckpt, tmp_path / "women", *args, "--sex", "F") == 0
    assert set(read_samples(tmp_path / "women").conditions["sex"].tolist()) == {"F"}
    with pytest.raises(SystemExit, match="--data_dir"):
        _gen(ckpt, tmp_path / "nodata", "--task_type", "custom", "--labels", "SR", "--count", "2", "--sex", "F")


def test_model_without_demographics_refuses_age_and_writes_no_conditions(prepared_demo90, tmp_path):
    assert train.main(_args(prepared_demo90, tmp_path, "cls", "--max_steps", "2", condition="classes")) == 0
    ckpt = tmp_path / "cls" / "checkpoints" / "latest.pt"
    with pytest.raises(SystemExit, match="--condition classes"):
        _gen(ckpt, tmp_path / "g", "--task_type", "custom", "--labels", "SR", "--count", "2", "--age", "70")
    assert _gen(ckpt, tmp_path / "g", "--task_type", "custom", "--labels", "SR", "--count", "2") == 0
    s = read_samples(tmp_path / "g")
    assert s.conditions is None and s.meta["demographics"]["mode"] == "none"

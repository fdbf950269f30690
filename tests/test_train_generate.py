"""End to end on demo data: train a tiny cNVAE-ECG, resume bit-for-bit, stop on NaN, generate 12-lead ECGs."""

import re

import numpy as np
import pytest
import torch

from nvae_ecg import generate, train
from nvae_ecg.classes import CLASS_ABBREVS, class_index
from nvae_ecg.leads import limb_identity_error
from nvae_ecg.samples import read_samples


@pytest.fixture(scope="module")
def prepared(prepared_demo90):
    return prepared_demo90


def _train_args(prepared, root, save, *extra):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny",
        "--batch_size", "8", "--epochs", "2", "--num_workers", "0", "--seed", "5", "--log_every", "2",
        "--iw_samples", "2", "--max_val_batches", "1", "--sample_every", "0", "--save_every", "1",
        "--percent_epochs", "50", *extra])


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert train.main(_train_args(prepared, root, "straight")) == 0
    return root


def test_run_folder_and_checkpoint(trained):
    run = trained / "straight"
    assert (run / "args.json").is_file() and (run / "log.txt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["classes"] == list(CLASS_ABBREVS)
    assert ckpt["config"]["num_classes"] == 9 and ckpt["config"]["length"] == 5000
    assert (run / "checkpoints" / "epoch_0001.pt").is_file()
    assert "val IW NLL" in (run / "log.txt").read_text()


def test_resume_is_bit_for_bit(prepared, trained):
    root = trained
    steps_per_epoch = torch.load(trained / "straight" / "checkpoints" / "epoch_0001.pt", map_location="cpu",
                                 weights_only=True)["step"]
    assert train.main(_train_args(prepared, root, "killed", "--max_steps", str(steps_per_epoch))) == 0
    half = _params(root / "killed" / "checkpoints" / "latest.pt")
    assert train.main(_train_args(prepared, root, "killed", "--resume")) == 0
    a = _params(root / "straight" / "checkpoints" / "latest.pt")
    b = _params(root / "killed" / "checkpoints" / "latest.pt")
    assert any(not torch.equal(half[k], b[k]) for k in b)  # the resumed run did train
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_max_steps_mid_epoch_is_bit_for_bit(prepared, trained):
    """--max_steps inside an epoch, then --resume: the rest of that epoch is trained, same steps, same weights."""
    root = trained
    steps_per_epoch = torch.load(trained / "straight" / "checkpoints" / "epoch_0001.pt", map_location="cpu",
                                 weights_only=True)["step"]
    assert steps_per_epoch >= 2
    cut = steps_per_epoch + steps_per_epoch // 2  # inside epoch 2
    assert train.main(_train_args(prepared, root, "cut", "--max_steps", str(cut))) == 0
    half = torch.load(root / "cut" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert (half["epoch"], half["batch_in_epoch"], half["step"]) == (1, cut - steps_per_epoch, cut)
    assert "stopped after" in (root / "cut" / "log.txt").read_text()
    assert train.main(_train_args(prepared, root, "cut", "--resume")) == 0
    a = torch.load(root / "straight" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(root / "cut" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert (b["step"], b["epoch"], b["batch_in_epoch"]) == (a["step"], 2, 0) == (2 * steps_per_epoch, 2, 0)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_start_removes_temporaries_of_killed_runs_only(prepared, trained, tmp_path):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    # Another live process (not this one: the writers here reuse this process's own temporary names).
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead, live = p.pid, alive.pid
    try:
        ckpts = trained / "straight" / "checkpoints"
        planted = {pid: ckpts / f".latest.pt.tmp-{pid}" for pid in (dead, live)}
        for f in planted.values():
            f.write_bytes(b"half a checkpoint")
        assert train.main(_train_args(prepared, trained, "straight", "--resume")) == 0  # finished: nothing to train
        assert not planted[dead].exists() and planted[live].exists()
        planted[live].unlink()
        out = tmp_path / "gen"
        tmps = {pid: tmp_path / f".gen.tmp-{pid}" for pid in (dead, live)}
        for d in tmps.values():
            d.mkdir()
        rc = generate.main(generate.parse_args([
            "--checkpoint", str(ckpts / "latest.pt"), "--task_type", "custom", "--labels", "AF", "--count", "1",
            "--out_dir", str(out), "--device", "cpu"]))
        assert rc == 0 and len(read_samples(out)) == 1
        assert not tmps[dead].exists() and tmps[live].exists()
    finally:
        alive.kill()
        alive.wait()


def test_refuses_to_overwrite_a_run(prepared, trained):
    assert train.main(_train_args(prepared, trained, "straight")) == 2


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(prepared, tmp_path, monkeypatch, caplog):
    real = train.compute_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        loss, parts, out = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 8 else loss), parts, out

    monkeypatch.setattr(train, "compute_loss", poisoned)
    rc = train.main(_train_args(prepared, tmp_path, "nan"))
    assert rc == 3
    log = (tmp_path / "nan" / "log.txt").read_text()
    # Detected at the next --log_every boundary or epoch end (no per-step host sync), never later than that.
    m = re.search(r"non-finite loss by step (\d+)", log)
    assert m and 9 <= int(m.group(1)) <= 10  # step 9 is the first poisoned one; --log_every 2
    ckpt = torch.load(tmp_path / "nan" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_generate_imbalance_exact_length_and_identities(prepared, trained, tmp_path):
    out = tmp_path / "gen"
    rc = generate.main(generate.parse_args([
        "--checkpoint", str(trained / "straight" / "checkpoints" / "latest.pt"), "--data_dir", str(prepared),
        "--task_type", "imbalance", "--factor", "0.05", "--out_dir", str(out), "--batch_size", "16",
        "--device", "cpu"]))
    assert rc == 0
    s = read_samples(out)
    assert s.signals.shape[1:] == (12, 5000) and len(s) > 0
    assert limb_identity_error(np.asarray(s.signals)) < 1e-5  # float32 rounding of mV values only
    assert (s.labels.sum(axis=1) == 1).all() and s.labels[:, class_index("SR")].sum() == 0
    assert s.meta["generator"] == "cnvae" and s.meta["task_type"] == "imbalance"
    assert np.isfinite(s.signals).all()


def test_generate_custom_and_wfdb_readable_by_prepare(prepared, trained, tmp_path):
    from nvae_ecg.data import prepare

    raw = tmp_path / "raw"
    rc = generate.main(generate.parse_args([
        "--checkpoint", str(trained / "straight" / "checkpoints" / "latest.pt"), "--task_type", "custom",
        "--labels", "SR,LAD", "--count", "3", "--labels", "AF", "--count", "2", "--format", "wfdb",
        "--out_dir", str(raw / "ptb-xl"), "--device", "cpu"]))
    assert rc == 0
    assert len(list((raw / "ptb-xl").glob("*.hea"))) == 5
    prepare.main(prepare.parse_args([str(raw), str(tmp_path / "prep"), "--workers", "1",
                                     "--datasets", "ptb-xl", "--no_filter"]))
    labels = np.load(tmp_path / "prep" / "ptb-xl" / "labels.npy")
    assert labels.shape == (5, 9)
    assert sorted(labels[:, class_index("LAD")].tolist()) == [0, 0, 1, 1, 1]
    assert labels[:, class_index("AF")].sum() == 2


def test_class_subset_model_previews_and_rejects_foreign_classes(prepared, tmp_path):
    # The authors' trainer crashed at its first preview (9-class label, 8-class model); ours samples its own classes.
    args = _train_args(prepared, tmp_path, "sub", "--classes", "SR,MI,AF", "--max_steps", "3", "--sample_every", "1")
    assert train.main(args) == 0
    ckpt = tmp_path / "sub" / "checkpoints" / "latest.pt"
    with pytest.raises(SystemExit, match="cannot generate"):
        generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "LAD",
                                           "--count", "1", "--out_dir", str(tmp_path / "g"), "--device", "cpu"]))


def test_gradient_accumulation_counts_optimizer_steps(prepared, trained, tmp_path):
    """--grad_accum_steps 2 with half the batch: the same optimiser steps per epoch as the plain run, logged as such."""
    straight = torch.load(trained / "straight" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    args = _train_args(prepared, tmp_path, "accum", "--batch_size", "4", "--grad_accum_steps", "2")
    assert train.main(args) == 0
    ckpt = torch.load(tmp_path / "accum" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == straight["step"] and ckpt["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert "of 2 x 4 ECGs" in (tmp_path / "accum" / "log.txt").read_text()
    with pytest.raises(SystemExit):
        train.parse_args(["--data_dir", str(prepared), "--grad_accum_steps", "0"])


def test_time_budget_stops_at_the_first_check_and_a_resume_stays_stopped(prepared, tmp_path):
    """--max_hours (as pulse2pulse.train): checked every --log_every steps, the time used is saved and summed."""
    args = _train_args(prepared, tmp_path, "budget", "--max_hours", "1e-9", "--save_every", "0")
    assert train.main(args) == 0
    ckpt = torch.load(tmp_path / "budget" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["train_seconds"] > 0  # --log_every 2: stopped at the first check
    assert ckpt["batch_in_epoch"] == 2 and ckpt["epoch"] == 0
    again = _train_args(prepared, tmp_path, "budget", "--max_hours", "1e-9", "--save_every", "0", "--resume")
    assert train.main(again) == 0
    after = torch.load(tmp_path / "budget" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert after["step"] == 2


def test_slim_checkpoint_generates_the_same_ecgs_and_holds_no_optimiser(prepared, trained, tmp_path):
    from nvae_ecg.utils import main as utils_main

    full = trained / "straight" / "checkpoints" / "latest.pt"
    slim = tmp_path / "slim.pt"
    assert utils_main(["slim", str(full), str(slim)]) == 0
    ckpt = torch.load(slim, map_location="cpu", weights_only=True)
    assert not {"optimizer", "scaler", "rng", "args"} & set(ckpt)
    assert slim.stat().st_size < full.stat().st_size
    sets = []
    for path in (full, slim):
        out = tmp_path / path.stem
        assert generate.main(generate.parse_args([
            "--checkpoint", str(path), "--data_dir", str(prepared), "--task_type", "imbalance", "--factor", "0.02",
            "--out_dir", str(out), "--batch_size", "16", "--device", "cpu", "--seed", "3"])) == 0
        sets.append(np.asarray(read_samples(out).signals))
    np.testing.assert_array_equal(sets[0], sets[1])

"""GAN baselines generate into the shared sample format with the shared counts; class subsets; shell scripts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nvae_ecg.classes import NUM_CLASSES
from nvae_ecg.counts import generation_plan, plan_to_labels
from nvae_ecg.data.datasets import load_prepared, select_indices
from nvae_ecg.leads import limb_identity_error
from nvae_ecg.samples import read_samples
from pulse2pulse import generate, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(prepared_ptbxl):
    return prepared_ptbxl


def _train(prepared, root, save, model, *extra):
    args = train.parse_args([
        "--model", model, "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny",
        "--batch_size", "8", "--epochs", "1", "--num_workers", "0", "--seed", "3", "--log_every", "1",
        "--n_critic", "2", "--sample_every", "0", *extra])
    assert train.main(args) == 0
    return root / save / "checkpoints" / "latest.pt"


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def wavegan_ckpt(prepared, tmp_path_factory):
    return _train(prepared, tmp_path_factory.mktemp("gan_runs"), "wg", "wavegan_star", "--max_steps", "2")


def _expected_labels(prepared, task, factor=None):
    p = load_prepared(prepared, "ptb-xl")
    labels = np.asarray(p.labels[select_indices(p, "train")])
    return plan_to_labels(generation_plan(labels, task, factor), NUM_CLASSES)


@pytest.mark.parametrize("task", ["imbalance", "addition"])
def test_generate_writes_the_shared_format_with_the_shared_counts(prepared, wavegan_ckpt, tmp_path, task):
    out = tmp_path / f"wavegan_star_{task}"
    assert generate.main(generate.parse_args(["--checkpoint", str(wavegan_ckpt), "--data_dir", str(prepared),
                                              "--task_type", task, "--factor", "0.5", "--out_dir", str(out),
                                              "--batch_size", "16", "--device", "cpu"])) == 0
    s = read_samples(out)
    expected = _expected_labels(prepared, task, 0.5)
    assert s.signals.shape == (len(expected), 12, 5000)
    assert np.array_equal(s.labels, expected)
    assert s.meta["generator"] == "wavegan_star" and s.meta["task_type"] == task
    assert limb_identity_error(np.asarray(s.signals)) < 1e-5
    assert np.isfinite(s.signals).all()
    bounds = _ckpt(wavegan_ckpt)["bounds"]
    lead_i = np.asarray(s.signals[:, 0])  # lead I stays inside its normalisation band (tanh mapped to [0, 1])
    assert lead_i.min() >= bounds["lower"][0] - 1e-4 and lead_i.max() <= bounds["upper"][0] + 1e-4


def test_generation_is_seeded(wavegan_ckpt, tmp_path):
    def run(seed, name):
        generate.main(generate.parse_args(["--checkpoint", str(wavegan_ckpt), "--task_type", "custom", "--labels",
                                           "MI", "--count", "2", "--seed", str(seed), "--out_dir",
                                           str(tmp_path / name), "--device", "cpu"]))
        return np.asarray(read_samples(tmp_path / name).signals)

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_pulse2pulse_projection_on_a_class_subset_trains_and_generates(prepared, tmp_path):
    ckpt = _train(prepared, tmp_path, "p2p", "pulse2pulse", "--cond_discriminator", "projection",
                  "--classes", "SR,AF,LAD", "--sample_every", "1")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "p2p"), size_guidance={"images": 0}).Reload()
    assert {"samples/SR", "samples/AF", "samples/LAD"} <= set(events.Tags()["images"])
    assert "train/wasserstein_avg" in events.Tags()["scalars"] and "train/gp_avg" in events.Tags()["scalars"]
    c = _ckpt(ckpt)
    assert c["generator"] == "pulse2pulse" and c["classes"] == ["SR", "AF", "LAD"]
    assert c["discriminator"]["class_embedding"].shape[0] == 3
    out = tmp_path / "gen"
    assert generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--task_type", "custom", "--labels",
                                              "SR,LAD", "--count", "3", "--labels", "AF", "--count", "2",
                                              "--out_dir", str(out), "--device", "cpu"])) == 0
    s = read_samples(out)
    assert s.signals.shape == (5, 12, 5000) and s.meta["generator"] == "pulse2pulse"
    assert s.meta["counts"] == {"SR+LAD": 3, "AF": 2}
    assert limb_identity_error(np.asarray(s.signals)) < 1e-5
    with pytest.raises(FileExistsError):
        generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "AF",
                                           "--count", "1", "--out_dir", str(out)]))
    with pytest.raises(SystemExit, match="cannot generate"):
        generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "MI",
                                           "--count", "1", "--out_dir", str(tmp_path / "mi")]))


def test_generate_rejects_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "vae.pt"
    torch.save({"model": {}, "config": {}}, path)
    with pytest.raises(ValueError, match="not a pulse2pulse GAN checkpoint"):
        generate.load_generator(path, torch.device("cpu"))


@pytest.mark.slow
def test_shell_scripts_run_end_to_end(prepared, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CONFIG="tiny", EPOCHS="1", MAX_STEPS="2", BATCH_SIZE="8",
               EXTRA_ARGS="--num_workers 0 --log_every 1", AMP="none")
    for script, model in (("wavegan_star_train.sh", "wavegan_star"), ("pulse2pulse_train.sh", "pulse2pulse")):
        r = subprocess.run(["bash", str(REPO / "scripts" / script), str(prepared), str(tmp_path / "runs")],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        ckpt = tmp_path / "runs" / model / "checkpoints" / "latest.pt"
        assert _ckpt(ckpt)["step"] == 2
        r = subprocess.run(["bash", str(REPO / "scripts" / "generate_gan_samples.sh"), str(ckpt), str(prepared),
                            str(tmp_path / "gen")], env=dict(env, BATCH_SIZE="64", EXTRA_ARGS=""),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        for task in ("imbalance", "addition"):
            s = read_samples(tmp_path / "gen" / f"{model}_{task}")
            assert s.meta["generator"] == model
            assert np.array_equal(s.labels, _expected_labels(prepared, task))

"""Quality while training (nvae_ecg.monitor): classes read from the data, planted real and noise generators, the
training RNG stream untouched, and both trainers writing ``quality/`` scalars to TensorBoard."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.monitor import HR_ORDER, QualityMonitor


@pytest.fixture(scope="module")
def dataset(prepared_ptbxl):
    return GeneratorDataset(prepared_ptbxl, "ptb-xl", split="train")


@pytest.fixture(scope="module")
def monitor(dataset):
    return QualityMonitor(dataset, n_per_class=3)


def _real_of_class(dataset):
    """A 'generator' that returns real training ECGs of the requested class (a different one per row)."""
    def sample(y: torch.Tensor) -> torch.Tensor:
        out, used = [], {}
        for row in y.cpu().numpy():
            k = int(np.argmax(row))
            rows = np.flatnonzero(dataset.labels[:, k] > 0)
            out.append(dataset[int(rows[used.get(k, 0) % len(rows)])][0])
            used[k] = used.get(k, 0) + 1
        return torch.stack(out)
    return sample


def _noise(y: torch.Tensor) -> torch.Tensor:
    return torch.rand(y.shape[0], 8, 5000)


class _Writer:
    def __init__(self):
        self.scalars, self.figures = {}, []

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value

    def add_figure(self, tag, fig, step):
        self.figures.append(tag)


def test_classes_and_labels_come_from_the_training_set(dataset, monitor):
    present = [dataset.class_names[k] for k in range(len(dataset.class_names)) if dataset.labels[:, k].sum() > 0]
    assert monitor.class_names == present and len(present) >= 3
    assert monitor.labels.shape == (3 * len(present), len(dataset.class_names))
    assert torch.equal(monitor.labels.sum(1), torch.ones(len(monitor.labels)))  # one-hot
    for c, k in enumerate(monitor.columns):
        assert (monitor.labels[3 * c: 3 * c + 3].argmax(1) == k).all()
    assert set(monitor.real_hr) == set(present)
    # The synthetic demo data's rhythms: bradycardia < sinus rhythm < tachycardia.
    assert monitor.real_hr["SB"] < 60 < monitor.real_hr["SR"] < 100 < monitor.real_hr["STach"]


def test_real_ecgs_of_the_class_score_like_real(dataset, monitor):
    m = monitor.evaluate(_real_of_class(dataset), step=7)
    assert m["step"] == 7 and m["r_peaks"] == 1.0 and m["beat_corr"] > 0.9
    for c in monitor.class_names:
        assert {f"hr/{c}", f"hr_real/{c}", f"r_peaks/{c}", f"psd_js/{c}"} <= set(m)
    for c in HR_ORDER:
        assert abs(m[f"hr/{c}"] - m[f"hr_real/{c}"]) < 15, c
    assert m["hr_order"] == 1.0 and m["hr_error"] < 15
    assert all(isinstance(v, float) for v in m.values())
    noise = monitor.evaluate(_noise)
    assert noise["r_peaks"] <= 0.1 and noise["hr_order"] == 0.0
    assert math.isnan(noise["hr/SR"]) and math.isnan(noise["hr_error"])
    assert noise["psd_js"] > 2 * m["psd_js"]


def test_evaluate_leaves_the_global_rng_alone_and_is_seeded(monitor):
    def sample(y):
        return torch.rand(y.shape[0], 8, 5000) * 0.1 + 0.45 + 0.3 * torch.sin(torch.arange(5000) / 40.0)

    torch.manual_seed(3)
    before = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(before)
    a = monitor.generate(sample)
    assert torch.equal(torch.get_rng_state(), before)
    b = monitor.evaluate(sample)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected)
    assert np.array_equal(a, monitor.last_signals)  # the same fixed noise at every call
    assert b["r_peaks"] >= 0.0


def test_log_writes_scalars_figures_and_a_line(dataset, monitor, caplog):
    writer = _Writer()
    logger = logging.getLogger("test_monitor")
    with caplog.at_level(logging.INFO, logger="test_monitor"):
        m = monitor(_real_of_class(dataset), writer, logger, step=500)
    line = caplog.records[-1].getMessage()
    assert line.startswith("step 500 quality: R-peaks 100% | HR SR ") and "SB<SR<STach yes" in line
    assert "PSD-JS" in line and "(real " in line
    assert writer.scalars["quality/r_peaks"] == 1.0 and "quality/hr/SB" in writer.scalars
    assert "quality/step" not in writer.scalars and "quality/seconds_total" in writer.scalars
    assert writer.figures == [f"quality/ecg/{c}" for c in monitor.class_names]
    assert m["seconds"] < 30


def _quality_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()
    return acc.Tags()


def test_vae_trainer_logs_quality_and_trains_the_same(prepared_ptbxl, tmp_path):
    from nvae_ecg import train

    def run(save, *extra):
        args = train.parse_args([
            "--data_dir", str(prepared_ptbxl), "--root", str(tmp_path), "--save", save, "--config", "tiny",
            "--batch_size", "8", "--epochs", "1", "--max_steps", "2", "--num_workers", "0", "--seed", "5",
            "--log_every", "1", "--iw_samples", "0", "--max_val_batches", "1", "--sample_every", "0",
            "--quality_n", "1", *extra])
        assert train.main(args) == 0
        return torch.load(tmp_path / save / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)

    on = run("on", "--quality_every", "1")
    off = run("off", "--quality_every", "0")
    tags = _quality_events(tmp_path / "on")
    assert {"quality/r_peaks", "quality/psd_js", "quality/hr_real/SR"} <= set(tags["scalars"])
    assert "quality/ecg/SR" in tags["images"]
    log = (tmp_path / "on" / "log.txt").read_text()
    assert "step 1 quality: R-peaks" in log and "step 2 quality: R-peaks" in log
    assert log.count("quality: R-peaks") == 2  # the last step's evaluation is not repeated at the end
    assert "quality: R-peaks" not in (tmp_path / "off" / "log.txt").read_text()
    assert not any(t.startswith("quality/") for t in _quality_events(tmp_path / "off")["scalars"])
    for k in on["model"]:  # the monitor shifts neither the training RNG stream nor the model (BN statistics)
        assert torch.equal(on["model"][k], off["model"][k]), k


def test_gan_trainer_logs_quality_and_trains_the_same(prepared_ptbxl, tmp_path):
    from pulse2pulse import train

    def run(save, *extra):
        args = train.parse_args([
            "--model", "wavegan_star", "--data_dir", str(prepared_ptbxl), "--root", str(tmp_path), "--save", save,
            "--config", "tiny", "--batch_size", "8", "--epochs", "1", "--max_steps", "3", "--num_workers", "0",
            "--seed", "5", "--log_every", "1", "--n_critic", "1", "--sample_every", "0", "--quality_n", "1", *extra])
        assert train.main(args) == 0
        return torch.load(tmp_path / save / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)

    on = run("on", "--quality_every", "2")
    off = run("off", "--quality_every", "0")
    tags = _quality_events(tmp_path / "on")
    assert {"quality/r_peaks", "quality/psd_js", "quality/train_hours"} <= set(tags["scalars"])
    assert "quality/ecg/SR" in tags["images"]
    log = (tmp_path / "on" / "log.txt").read_text()
    assert "step 2 quality: R-peaks" in log and "step 3 quality: R-peaks" in log  # every 2 steps and at the end
    for part in ("model", "discriminator"):
        for k in on[part]:
            assert torch.equal(on[part][k], off[part][k]), f"{part}.{k}"

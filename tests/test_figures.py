"""Report figures: R-peak detector and heart rate on simulated ECGs, median beats, nearest neighbours, the figure
report from tiny inputs, and the architecture figure's shapes against the model."""

import json

import numpy as np
import pytest
import torch

from nvae_ecg.classes import class_index
from nvae_ecg.data.synthetic import simulate_ecg
from nvae_ecg.ecg_stats import detect_r_peaks, heart_rate, heart_rates, median_beat
from nvae_ecg.samples import SampleWriter

FS = 500


def _sim(labels, seed, **kw):
    return simulate_ecg(labels, fs=FS, rng=np.random.default_rng(seed), **kw)


# ----------------------------------------------------------------------------------------------- R peaks, heart rate


@pytest.mark.parametrize("labels", [["SR"], ["SB"], ["STach"], ["AF"], ["SR", "LAD"], ["SR", "MI"], ["SR", "LVH"],
                                    ["SR", "IAVB"], ["SB", "TAb"]], ids="+".join)
def test_heart_rate_matches_the_simulated_rate(labels):
    for seed in range(6):
        sim = _sim(labels, seed)
        # Truth: 60 / mean RR of the simulated beats inside the record (SimulatedEcg.heart_rate_bpm).
        assert heart_rate(sim.signal, FS) == pytest.approx(sim.heart_rate_bpm, abs=2.0), (labels, seed)
        peaks = detect_r_peaks(sim.signal, FS) / FS
        truth = sim.r_peaks_s[(sim.r_peaks_s > 0.4) & (sim.r_peaks_s < 9.6)]
        found = peaks[(peaks > 0.3) & (peaks < 9.7)]
        # Every beat away from the edges is found once, within 30 ms of the simulated R time, and nothing else.
        dist = np.abs(found[:, None] - truth[None, :])
        assert (dist.min(axis=0) < 0.03).all(), (labels, seed)
        assert len(found) <= len(truth) + 2


def test_rates_separate_bradycardia_from_tachycardia():
    sb = heart_rates(np.stack([_sim(["SB"], s).signal for s in range(5)]), FS)
    st = heart_rates(np.stack([_sim(["STach"], s).signal for s in range(5)]), FS)
    assert (sb < 60).all() and (st > 100).all()


def test_zero_padding_flat_and_bad_input():
    sim = _sim(["SR"], 3, duration_s=6.0)
    padded = np.zeros((12, 5000))
    padded[:, :3000] = sim.signal
    # The zero padding of short records is ignored: same rate as the unpadded record.
    assert heart_rate(padded, FS) == pytest.approx(heart_rate(sim.signal, FS), abs=1e-9)
    assert heart_rate(padded, FS) == pytest.approx(sim.heart_rate_bpm, abs=2.0)
    assert np.isnan(heart_rate(np.zeros((12, 5000)), FS))
    assert np.isnan(heart_rate(np.ones((12, 5000)), FS))  # constant: no QRS (not peaks in round-off ripple)
    assert np.isnan(heart_rate(np.full((12, 5000), np.nan), FS))
    assert median_beat(np.zeros((12, 5000)), FS) is None
    with pytest.raises(ValueError, match=r"\(12, n\)"):
        heart_rate(np.zeros((8, 5000)), FS)
    with pytest.raises(ValueError, match="unknown lead"):
        detect_r_peaks(sim.signal, FS, lead="X")


def test_median_beat_is_aligned_at_the_r_peak():
    sim = _sim(["SR"], 7, noise=False)
    beat = median_beat(sim.signal, FS, lead="I", window=(0.25, 0.45))
    assert beat.shape == (350,)
    # Lead I of a normal axis has a tall R wave: the beat's extreme sits at the R peak (index 125 = 0.25 s).
    assert abs(int(np.argmax(np.abs(beat))) - 125) <= 10
    assert beat[125] > 0.2


# ----------------------------------------------------------------------------------------------- figures and report


@pytest.fixture(scope="module")
def prepared(prepared_ptbxl):
    return prepared_ptbxl


def _write_set(path, signals, labels, generator, task="imbalance"):
    with SampleWriter(path, len(signals)) as w:
        w.write(signals.astype(np.float32), labels)
        w.close({"generator": generator, "task_type": task})


def _simulated_set(path, per_class, generator, seed=0):
    sig, lab = [], []
    for k, cls in enumerate(("MI", "STach", "SB")):
        for i in range(per_class):
            sig.append(_sim([cls], 1000 * seed + 10 * k + i).signal)
            y = np.zeros(9, dtype=np.uint8)
            y[class_index(cls)] = 1
            lab.append(y)
    _write_set(path, np.stack(sig), np.stack(lab), generator)


def test_nearest_neighbour_finds_copied_training_ecgs(prepared, tmp_path):
    from train_test.figures import Pool, nearest_real, real_pool

    real = real_pool(prepared)
    c = class_index("SR")
    rows = real.with_class(c)[:3]
    queries = real.get_many(rows).astype(np.float64)
    queries[1] += 0.01  # a small offset keeps it closest to its source
    arg, dist = nearest_real(real, c, queries, max_candidates=10_000, rng=np.random.default_rng(0), chunk=7)
    np.testing.assert_array_equal(arg, rows)
    assert dist[0] == pytest.approx(0.0, abs=1e-6) and dist[1] == pytest.approx(0.01, rel=1e-3)
    empty = Pool("x")
    empty.add(real.parts[0], [], np.zeros((0, 9)))
    arg, dist = nearest_real(empty, c, queries, 10, np.random.default_rng(0))
    assert (arg == -1).all() and np.isnan(dist).all()


def test_report_renders_every_figure_from_tiny_inputs(prepared, tmp_path):
    from train_test.report import build_report

    gen = tmp_path / "generated"
    _simulated_set(gen / "sim_imbalance", 4, "simulator")
    rep = build_report(tmp_path / "no_results", out_dir=tmp_path / "report", prepared_dir=prepared,
                       generated_root=gen, max_per_class=20)
    out = tmp_path / "report"
    md = (out / "report.md").read_text()
    assert "No benchmark results" in md
    # Every image the report links exists and is a real picture.
    links = [line.split("](")[1].split(")")[0] for line in md.replace("| ", "\n").splitlines() if "](" in line]
    assert len(links) == 9 + 3 + 1 + 2  # real per class, simulator's 3 classes, its neighbours, beats, rates
    for name in links:
        assert (out / name).is_file() and (out / name).stat().st_size > 5_000, name
    # Classes the generator never produced are shown as missing, not plotted.
    assert "| SR | ![SR real](ecg_SR_real.png) | none |" in md
    hr = json.loads((out / "report.json").read_text())["figures"]["heart_rate"]
    assert hr["simulator"]["STach"]["median_bpm"] > 100 > 60 > hr["simulator"]["SB"]["median_bpm"]
    assert hr["simulator"]["SR"]["n"] == 0 and hr["simulator"]["SR"]["median_bpm"] is None
    assert hr["real"]["SR"]["n"] > 0
    assert rep["report_md"] == str(out / "report.md")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "no_results", out_dir=tmp_path / "r2")


def test_architecture_figure_shapes_match_the_model(tmp_path):
    from nvae_ecg.architecture_figure import main, parse_args, shapes
    from nvae_ecg.config import get_config
    from nvae_ecg.model import AutoEncoder

    cfg = get_config("tiny", length=1000)
    sh = shapes(cfg)
    model = AutoEncoder(cfg).eval()
    assert sh.groups == model.groups_per_scale
    assert model.class_features_table.shape[1:] == (sh.top_channels, sh.top_length)
    with torch.no_grad():
        s = model.pre_process(model.stem(model._pad(torch.rand(1, 8, cfg.length))))
    assert tuple(s.shape[1:]) == (sh.pre_channels, sh.pre_length)
    paper = shapes(get_config("paper"))
    assert paper.groups == [20, 10, 5] and paper.padded == 5056 and (paper.top_channels, paper.top_length) == (768, 79)
    out = main(parse_args(["--config", "small", "--out", str(tmp_path / "arch.png"), "--dpi", "40"]))
    assert out.stat().st_size > 10_000

"""Synthetic-ECG quality metrics on known cases, and the quality report end to end on the tiny prepared demo data.

Known cases: identical feature sets give zero Frechet/kernel distance and full
precision/recall/coverage; shifted sets give larger distances (Frechet matches the
closed form of two Gaussians); the kernel distance and PRDC match hand computations;
spectra and correlations of identical sets do not differ while added mains hum does;
ECGs simulated at 150 bpm pass the STach heart-rate check and 70-bpm ones do not;
copies of training ECGs are flagged by the memorisation check and fresh ECGs are not.

Example::

    pytest tests/test_quality.py -q
"""

import json
import importlib
import math
import re

import numpy as np
import pytest
from scipy import linalg
from scipy import signal as sps
from sklearn.metrics import pairwise_distances

from nvae_ecg.classes import CLASS_ABBREVS, class_index
from nvae_ecg.data.synthetic import simulate_ecg
from nvae_ecg.leads import LEADS12, eight_to_twelve
from train_test import quality as Q

FS = 500


# ----------------------------------------------------------------------------------------------- feature metrics


def test_identical_sets_give_zero_distance_and_full_precision_recall():
    a = np.random.default_rng(0).normal(size=(300, 16))
    assert Q.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shifted = Q.kernel_distance(a, a + 0.5)
    # Unbiased, so for identical sets -2 / (n - 1) x (mean diagonal - mean of all kernel values): zero up to O(1/n).
    assert abs(Q.kernel_distance(a, a)) < 0.1 * shifted
    assert abs(Q.kernel_distance(a, a)) < abs(Q.kernel_distance(a[:100], a[:100]))
    m = Q.prdc(a, a, k=5)
    assert m.precision == 1.0 and m.recall == 1.0 and m.coverage == 1.0
    # Strictly inside, as the official prdc: each real ball holds its centre and the k - 1 nearer neighbours (the
    # k-th lies on the boundary), so density is exactly 1 (with `<=` it was (k + 1) / k).
    assert m.density == 1.0


def test_shifted_sets_give_larger_distances_and_frechet_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    fds = [Q.frechet_distance(a, b + s) for s in (0.0, 0.25, 0.5, 1.0)]
    kids = [Q.kernel_distance(a, b + s) for s in (0.0, 0.25, 0.5, 1.0)]
    precisions = [Q.prdc(a, b + s, k=5).precision for s in (0.0, 0.5, 1.0)]
    assert fds == sorted(fds) and fds[-1] > 10 * fds[0]
    assert kids == sorted(kids) and abs(kids[0]) < 0.05 * kids[-1]
    assert precisions == sorted(precisions, reverse=True) and precisions[0] > 0.9 > precisions[-1]
    # N(0, I) vs N(mu, diag(s^2)): |mu|^2 + sum (1 - s)^2.
    big = np.random.default_rng(2)
    mu, s = np.array([1.0, -0.5, 0.0, 2.0]), np.array([1.0, 2.0, 0.5, 1.0])
    x, y = big.normal(size=(40_000, 4)), mu + s * big.normal(size=(40_000, 4))
    assert Q.frechet_distance(x, y) == pytest.approx(mu @ mu + ((1 - s) ** 2).sum(), rel=0.03)
    # Correlated features: the eigenvalue form equals the textbook formula with a general matrix square root.
    mix = big.normal(size=(6, 6))
    u, w = big.normal(size=(500, 6)) @ mix, big.normal(size=(300, 6)) @ mix.T + 0.3
    cu, cw = np.cov(u, rowvar=False), np.cov(w, rowvar=False)
    d = u.mean(0) - w.mean(0)
    textbook = d @ d + np.trace(cu + cw) - 2 * np.trace(np.real(linalg.sqrtm(cu @ cw)))
    assert Q.frechet_distance(u, w) == pytest.approx(textbook, rel=1e-8)


def test_kernel_distance_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.3

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    saa = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    sbb = sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
    sab = sum(k(a[i], b[j]) for i in range(5) for j in range(4)) / 20
    assert Q.kernel_distance(a, b) == pytest.approx(saa + sbb - 2 * sab, rel=1e-10)


def _official_prdc(real, fake, k):
    """clovaai/generative-evaluation-prdc's compute_prdc, transcribed: kth-value radii and strict `<`."""
    def radii(x):
        d = pairwise_distances(x, x)
        return np.take_along_axis(d, np.argpartition(d, k + 1, axis=-1)[..., :k + 1], axis=-1).max(axis=-1)

    r_real, r_fake, d = radii(real), radii(fake), pairwise_distances(real, fake)
    return (float((d < r_real[:, None]).any(axis=0).mean()), float((d < r_fake[None, :]).any(axis=1).mean()),
            float((d < r_real[:, None]).sum(axis=0).mean() / k), float((d.min(axis=1) < r_real).mean()))


def test_prdc_follows_the_official_strict_rule():
    # A fake point exactly on a real ball's boundary is outside it (official `<`); the old `<=` counted it.
    real, fake = np.array([[0.0], [2.0], [10.0]]), np.array([[-2.0], [30.0]])
    m = Q.prdc(real, fake, k=1)  # real radii 2, 2, 8: -2 lies on the first ball's boundary only
    assert (m.precision, m.density) == (0.0, 0.0)
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.3, 1.2, size=(150, 8))
    for k in (1, 3, 5):
        got = Q.prdc(a, b, k=k)
        assert (got.precision, got.recall, got.density, got.coverage) == pytest.approx(_official_prdc(a, b, k))
        same = Q.prdc(a, a.copy(), k=k)
        assert (same.precision, same.recall, same.density, same.coverage) == (1.0, 1.0, 1.0, 1.0)


def test_prdc_by_hand_and_small_sets():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [20.0]])
    m = Q.prdc(real, fake, k=1)
    # Real radii (1st neighbour): 1, 1, 1, 8; fake radii: 19.5, 19.5.
    assert (m.precision, m.recall, m.density, m.coverage) == (0.5, 1.0, 1.0, 0.5)
    assert math.isnan(Q.prdc(real, fake, k=2).precision)  # the fake set has only 2 <= k points
    assert math.isnan(Q.frechet_distance(real[:1], fake))
    with pytest.raises(ValueError, match="widths"):
        Q.frechet_distance(real, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        Q.kernel_distance(real, np.array([[np.nan], [1.0]]))


# ----------------------------------------------------------------------------------------------- signal statistics


def _sims(labels, seeds, **kw):
    return np.stack([simulate_ecg(labels, fs=FS, rng=np.random.default_rng(s), **kw).signal for s in seeds])


@pytest.fixture(scope="module")
def sr_ecgs():
    return _sims(["SR"], range(8))


def _mean_spectra(x):
    f, p = Q.welch_psd(x)
    _, s = Q.normalised_spectra(f, p)
    return f, np.nanmean(s, axis=0)


def test_psd_distance_zero_for_identical_sets_larger_with_mains_hum(sr_ecgs):
    f, a = _mean_spectra(sr_ecgs[:4])
    _, b = _mean_spectra(sr_ecgs[4:])
    t = np.arange(sr_ecgs.shape[-1]) / FS
    _, hum = _mean_spectra(sr_ecgs[:4] + 0.2 * np.sin(2 * np.pi * 50 * t))
    assert f[1] - f[0] == pytest.approx(0.5)
    np.testing.assert_allclose(Q.psd_js_distance(a, a), 0.0, atol=1e-7)
    same, humming = Q.psd_js_distance(a, b), Q.psd_js_distance(a, hum)
    assert same.shape == (12,) and (humming > same).all() and (humming > 0.2).all()


def test_lead_correlations_and_limb_errors(sr_ecgs):
    x = sr_ecgs[:3]
    c = Q.lead_correlations(x)
    np.testing.assert_allclose(c[1], np.corrcoef(x[1]), atol=1e-10)
    assert Q.correlation_distance(c.mean(0), c.mean(0)) == 0.0
    assert Q.correlation_distance(c[0], -c[0]) > 0.5
    exact = eight_to_twelve(np.random.default_rng(0).normal(size=(2, 8, 500)))
    np.testing.assert_allclose(Q.limb_errors(exact), 0.0, atol=1e-12)
    broken = exact.copy()
    broken[1, LEADS12.index("aVR")] += 0.1
    assert Q.limb_errors(broken)[1] == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------------- physiology


def _at_rate(bpm: float, seed: int) -> np.ndarray:
    """A simulated sinus-rhythm ECG time-scaled to a 10 s record at ``bpm`` (the simulator draws its own rate)."""
    base = simulate_ecg(["SR"], fs=FS, rng=np.random.default_rng(seed))
    # Same seed, longer record: the same drawn rhythm, which resampling to 10 s speeds up to the wanted rate.
    duration = 10.0 * bpm / base.heart_rate_bpm
    long = simulate_ecg(["SR"], fs=FS, duration_s=duration, rng=np.random.default_rng(seed)).signal
    return sps.resample(long, 10 * FS, axis=-1)


@pytest.mark.parametrize("backend", ["neurokit2", "ecg_stats"])
def test_150_bpm_ecgs_pass_the_stach_check_and_70_bpm_ones_do_not(backend):
    if backend == "neurokit2":
        pytest.importorskip("neurokit2", reason="neurokit2 is not installed")
    y = np.zeros((4, 9), dtype=np.uint8)
    y[:, class_index("STach")] = 1
    fractions = {}
    for bpm in (150, 70):
        phys = Q.physiology_batch(np.stack([_at_rate(bpm, s) for s in range(4)]), FS, backend)
        # A detector may miss one beat of 25 (-4 %); the typical ECG is measured within 2 bpm.
        assert abs(np.median(phys["hr"]) - bpm) < 2.0 and np.all(np.abs(phys["hr"] - bpm) < 0.05 * bpm)
        fractions[bpm] = Q.check_fractions(phys, y, CLASS_ABBREVS)["STach"]["fraction"]
    assert fractions == {150: 1.0, 70: 0.0}


def test_physiology_matches_the_simulated_truth():
    pytest.importorskip("neurokit2", reason="neurokit2 is not installed")
    for labels, seed in ((["SR"], 0), (["SR", "LAD"], 1), (["AF"], 2), (["SB"], 3)):
        sim = simulate_ecg(labels, fs=FS, rng=np.random.default_rng(seed))
        p = Q.ecg_physiology(sim.signal, FS, "neurokit2")
        assert p["hr"] == pytest.approx(sim.heart_rate_bpm, abs=3.0), labels
        assert abs(p["axis"] - sim.qrs_axis_deg) < 15.0, labels
        assert 250 < p["qt"] < 550 and 20 < p["qrs"] < 200, (labels, p)  # R to S only where Q is missing
        assert (p["rr_cv"] > 0.10) == ("AF" in labels), (labels, p["rr_cv"])
        if "AF" not in labels:
            # PR is measured to the Q peak, a little shorter than the clinical PR (to the QRS onset).
            assert sim.pr_ms - 70 < p["pr"] < sim.pr_ms + 20, (labels, p["pr"], sim.pr_ms)
    lad = Q.ecg_physiology(simulate_ecg(["SR", "LAD"], fs=FS, rng=np.random.default_rng(5)).signal, FS, "neurokit2")
    assert Q.CHECKS["LAD"].passes([lad["axis"]])[0]


def test_unmeasurable_ecgs_give_nan_not_errors():
    backends = ["ecg_stats"] + (["neurokit2"] if _has_neurokit() else [])
    noise = np.random.default_rng(0).normal(size=(12, 5000))
    for backend in backends:
        for x in (np.zeros((12, 5000)), np.ones((12, 5000)), np.zeros((12, 500)) + 1.0):
            assert all(math.isnan(v) for v in Q.ecg_physiology(x, FS, backend).values()), backend
        assert set(Q.ecg_physiology(noise, FS, backend)) == set(Q.PHYS_METRICS)
    with pytest.raises(ValueError, match=r"\(12, n\)"):
        Q.ecg_physiology(np.zeros((8, 5000)))
    stach = np.zeros((2, 9), dtype=np.uint8)
    stach[:, class_index("STach")] = 1
    phys = {m: np.full(2, np.nan) for m in Q.PHYS_METRICS} | {"hr": np.array([np.nan, 150.0])}
    assert Q.check_fractions(phys, stach, CLASS_ABBREVS)["STach"] == {
        "check": "HR > 100 bpm", "n": 2, "n_measured": 1, "fraction": 0.5}
    with pytest.raises(ValueError, match="unknown physiology backend"):
        Q.resolve_backend("nope")


def _has_neurokit() -> bool:
    try:
        importlib.import_module("neurokit2")
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- memorisation


def _smooth_signals(rng, n, length=1000):
    # Random 12-lead "ECGs" with ECG-like smoothness, independent across records.
    x = rng.normal(size=(n, 12, length))
    return sps.sosfiltfilt(sps.butter(2, 15, fs=FS, output="sos"), x, axis=-1).astype(np.float32)


def test_copies_of_training_ecgs_are_flagged_and_fresh_ones_are_not():
    rng = np.random.default_rng(0)
    train, test, fresh = (Q.pooled_signals(_smooth_signals(rng, n)) for n in (300, 200, 200))
    raw_train = _smooth_signals(np.random.default_rng(0), 300)
    copies = Q.pooled_signals(raw_train[:50] + rng.normal(0, 0.005, size=raw_train[:50].shape).astype(np.float32))
    test_nn, _ = Q.nearest_distances(test, train)
    copy_nn, arg = Q.nearest_distances(copies, train, chunk=37)
    np.testing.assert_array_equal(arg, np.arange(50))  # each copy finds its own source
    fresh_nn, _ = Q.nearest_distances(fresh, train)
    copied, novel = Q.memorisation(copy_nn, test_nn), Q.memorisation(fresh_nn, test_nn)
    assert copied["fraction_below"] == 1.0 and copied["flagged"] is True
    assert novel["fraction_below"] <= Q.MEMORISATION_ALARM and novel["flagged"] is False
    assert copied["median_distance"] < 0.1 * novel["median_distance"]


def test_relative_distance_flags_copies_but_not_flat_or_weak_generators():
    """Absolute distances would call a near-flat generator a copier (it sits next to the weakest training ECGs)."""
    rng = np.random.default_rng(1)
    raw_train = _smooth_signals(rng, 300)
    raw_train *= rng.uniform(0.05, 2.0, size=(300, 1, 1)).astype(np.float32)  # amplitudes vary across patients
    train = Q.pooled_signals(raw_train)
    test = Q.pooled_signals(_smooth_signals(rng, 200) * rng.uniform(0.05, 2.0, size=(200, 1, 1)).astype(np.float32))
    flat = Q.pooled_signals(0.002 * _smooth_signals(rng, 100))
    copies = Q.pooled_signals(raw_train[:50] * 1.01)
    test_rel, _ = Q.relative_nearest_distances(test, train)
    flat_abs, _ = Q.nearest_distances(flat, train)
    test_abs, _ = Q.nearest_distances(test, train)
    assert Q.memorisation(flat_abs, test_abs)["flagged"] is True  # the false alarm of absolute distances
    flat_rel, _ = Q.relative_nearest_distances(flat, train)
    assert Q.memorisation(flat_rel, test_rel)["flagged"] is False and np.median(flat_rel) > 1.0
    copy_rel, arg = Q.relative_nearest_distances(copies, train)
    np.testing.assert_array_equal(arg, np.arange(50))
    assert Q.memorisation(copy_rel, test_rel)["flagged"] is True and copy_rel.max() < 0.02


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(4)
    q, r = rng.normal(size=(7, 30)), rng.normal(size=(23, 30))
    d, arg = Q.nearest_distances(q, r, chunk=5)
    full = np.sqrt(((q[:, None] - r[None]) ** 2).mean(-1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-9)
    np.testing.assert_array_equal(arg, full.argmin(1))
    assert np.isnan(Q.nearest_distances(q, r[:0])[0]).all()
    assert Q.memorisation([], [1.0])["flagged"] is None


# ----------------------------------------------------------------------------------------------- end to end


def test_sample_rows_caps_every_class():
    from train_test.quality import sample_rows

    y = np.zeros((100, 9), dtype=np.uint8)
    y[:60, 0] = 1
    y[50:70, 1] = 1
    rows = sample_rows(y, 10, np.random.default_rng(0))
    assert (y[rows, 1] == 1).sum() >= 10 and (y[rows, 0] == 1).sum() <= 20
    assert len(np.setdiff1d(rows, np.arange(70))) == 0  # unlabelled rows are never taken
    assert len(sample_rows(y, 0, np.random.default_rng(0))) == 70


@pytest.fixture(scope="module")
def quality_run(prepared_ptbxl, tmp_path_factory):
    """The CLI on the tiny prepared demo data with a surrogate generator (noisy copies of training ECGs).

    The demo test split has 4 ECGs, so k = 1 keeps precision/recall defined for its larger classes.
    """
    from train_test import quality as E
    from train_test.surrogate import write_surrogate

    root = tmp_path_factory.mktemp("quality")
    write_surrogate(prepared_ptbxl, root / "gen" / "noisy_addition", generator="noisy", task_type="addition", seed=0)
    argv = ["--real", str(prepared_ptbxl), "--generated", str(root / "gen" / "noisy_addition"),
            "--out_dir", str(root / "results" / "quality"), "--arch", "tiny", "--epochs", "1", "--device", "cpu",
            "--num_workers", "0", "--bootstrap", "10", "--max_per_class", "8", "--workers", "1", "--k", "1"]
    q = E.main(E.parse_args(argv))
    return root, argv, q


def test_cli_writes_json_markdown_and_figures(quality_run):
    root, _, q = quality_run
    out = root / "results" / "quality"
    data = json.loads((out / "quality.json").read_text())
    assert data["format"] == "cnvae-ecg-quality/1" and data["classes"] == list(CLASS_ABBREVS)
    ref, gen = data["rows"]
    assert ref["kind"] == "reference" and gen["name"] == "noisy" and gen["surrogate"] is True
    # The surrogate is training ECGs plus noise: flagged as copies; its per-lead noise breaks the limb identities.
    assert gen["memorisation"]["flagged"] is True and gen["memorisation"]["fraction_below"] > 0.9
    assert gen["signal"]["limb_error"]["max"] > 0.01 > ref["signal"]["limb_error"]["max"]
    assert gen["fidelity"]["tstr"] is not None and 0.0 <= gen["fidelity"]["tstr"]["macro"] <= 1.0
    for row in (ref, gen):
        assert 0.0 <= row["realism"]["overall"]["precision"] <= 1.0
        assert row["realism"]["overall"]["fd"] >= 0.0
        assert set(row["physiology"]["checks"]) == set(Q.CHECKS)
    md = (out / "quality.md").read_text()
    assert "| source | TRTS AUROC ↑ | TSTR AUROC ↑ |" in md and "| real: train vs. test | TRTR" in md
    assert "**flagged**" in md and "| STach | HR > 100 bpm |" in md
    links = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert sorted(links) == sorted(data["figures"]) and len(links) == 4
    for name in links:
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "classifier.pt").is_file() and data["classifier"]["trained_here"] is True


def test_cli_reuses_the_classifier_and_the_report_includes_the_quality_section(quality_run, tmp_path):
    from train_test import quality as E
    from train_test.report import build_report

    root, argv, _ = quality_run
    ckpt = root / "results" / "quality" / "classifier.pt"
    mtime = ckpt.stat().st_mtime_ns
    again = E.main(E.parse_args(argv + ["--no_tstr", "--max_per_class", "3", "--out_dir", str(tmp_path / "q2"),
                                        "--classifier_ckpt", str(ckpt)]))
    assert ckpt.stat().st_mtime_ns == mtime and again["classifier"]["trained_here"] is False
    assert again["rows"][1]["fidelity"]["tstr"] is None
    rep = build_report(root / "results", out_dir=tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Synthetic-ECG quality" in md and rep["quality"].endswith("quality.json")
    for link in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (tmp_path / "report" / link).resolve().is_file(), link
    with pytest.raises(FileNotFoundError, match="evaluate_quality"):
        build_report(root / "results", out_dir=tmp_path / "r2", quality_dir=tmp_path / "nowhere")


def test_bad_inputs_fail_with_clear_messages(quality_run, tmp_path):
    from train_test import quality as E

    root, argv, _ = quality_run
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bogus.pt"):
        E.main(E.parse_args(argv + ["--out_dir", str(tmp_path / "q"), "--classifier_ckpt", str(bogus)]))
    with pytest.raises(SystemExit):
        E.parse_args(["--real", "x", "--out_dir", "y"])  # no generated set
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.main(E.parse_args(argv + ["--out_dir", str(tmp_path / "q"), "--generated", str(tmp_path / "missing")]))


def test_generated_nan_is_refused_naming_the_file_and_the_count(prepared_ptbxl, tmp_path):
    """NaN in generated signals used to pass the report silently (exit 0: physiology NaN = unmeasurable)."""
    from train_test import quality as E
    from train_test.surrogate import write_surrogate

    gen = tmp_path / "gen" / "noisy_addition"
    write_surrogate(prepared_ptbxl, gen, generator="noisy", task_type="addition", seed=0)
    sig = np.load(gen / "signals.npy", mmap_mode="r+")
    n = len(sig)
    sig[1, 3, 100] = np.nan
    sig[4, :, :] = np.nan
    sig[5, 0, 0] = np.inf
    sig.flush()
    del sig
    np.testing.assert_array_equal(E.non_finite_rows(np.load(gen / "signals.npy", mmap_mode="r"), chunk=2), [1, 4, 5])
    argv = ["--real", str(prepared_ptbxl), "--generated", str(gen), "--out_dir", str(tmp_path / "q"),
            "--arch", "tiny", "--epochs", "1", "--device", "cpu", "--num_workers", "0", "--workers", "1"]
    with pytest.raises(ValueError, match=rf"signals\.npy: 3 of {n} generated ECGs contain NaN or inf \(rows 1, 4, 5\)"):
        E.main(E.parse_args(argv))
    assert not (tmp_path / "q" / "quality.json").exists()


def test_evaluate_quality_command_line_name_runs_the_package():
    """``python -m train_test.evaluate_quality`` (scripts, README, users' command lines) is the package's CLI."""
    import subprocess
    import sys

    from train_test import evaluate_quality as E
    from train_test import quality

    assert E.main is quality.main and E.parse_args is quality.parse_args and E.evaluate is quality.evaluate
    assert E.quality_markdown is quality.quality_markdown and E.sample_rows is quality.sample_rows
    res = subprocess.run([sys.executable, "-m", "train_test.evaluate_quality", "--help"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m train_test.evaluate_quality") and "--generated_root" in res.stdout

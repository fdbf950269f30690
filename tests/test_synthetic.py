"""Tests of the synthetic Challenge-2021-style demo data generator (nvae_ecg.data.synthetic).

Run with::

    .venv/bin/pytest -q tests/test_synthetic.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb
from scipy import signal as sps

from nvae_ecg.classes import CLASS_ABBREVS, CLASS_CODES, codes_to_multihot
from nvae_ecg.data import synthetic
from nvae_ecg.data.challenge import write_challenge_record
from nvae_ecg.data.synthetic import make_dataset, simulate_ecg
from nvae_ecg.leads import LEADS12, limb_identity_error

FS = 500
SAMPLE_DIR = Path(os.environ.get("CHALLENGE_SAMPLE_DIR",
                                 Path(__file__).resolve().parents[1].parent / "shared/data/challenge2021-sample"))
_BP = sps.butter(2, [5.0, 25.0], btype="bandpass", fs=FS, output="sos")
_HP = sps.butter(2, [0.5, 40.0], btype="bandpass", fs=FS, output="sos")


def _r_peaks(x12: np.ndarray, lead: str | None = "II") -> np.ndarray:
    """R-peak sample indices from band-passed lead (or the RMS of all leads when lead is None)."""
    y = sps.sosfiltfilt(_BP, x12, axis=1)
    env = np.abs(y[LEADS12.index(lead)]) if lead else np.sqrt((y ** 2).mean(axis=0))
    peaks, _ = sps.find_peaks(env, height=0.4 * np.percentile(env, 99.5), distance=int(0.25 * FS))
    return peaks


def _sim(labels, seed, **kw):
    return simulate_ecg(labels, fs=FS, duration_s=10.0, rng=np.random.default_rng(seed), **kw)


def _read_all(root: Path):
    out = {}
    for hea in sorted(root.glob("*/g*/*.hea")):
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        out[hea] = rec
    return out


def _dx(rec) -> list[str]:
    line = next(c for c in rec.comments if c.startswith("Dx:"))
    return [c.strip() for c in line.split(":", 1)[1].split(",")]


# ---------------------------------------------------------------- file format


@pytest.mark.parametrize("lower", [False, True])
def test_write_read_roundtrip(tmp_path, lower):
    sim = _sim(["SR", "LVH"], 1)
    x = sim.signal
    write_challenge_record(tmp_path / "g1" / "HR00007", x, FS, age=56, sex="Female",
                           dx=["426783006", "164873001", "59118001"], units="mv" if lower else "mV")
    rec = wfdb.rdrecord(str(tmp_path / "g1" / "HR00007"))
    assert rec.p_signal.shape == (5000, 12) and rec.fs == FS and list(rec.sig_name) == list(LEADS12)
    assert set(rec.units) == {"mv" if lower else "mV"} and set(rec.adc_gain) == {1000.0}
    assert np.max(np.abs(rec.p_signal.T - x)) <= 5e-4 + 1e-9
    val = scipy.io.loadmat(str(tmp_path / "g1" / "HR00007.mat"))["val"]
    assert val.dtype == np.int16 and val.shape == (12, 5000)
    assert rec.init_value == val[:, 0].tolist()
    assert rec.checksum == ((val.astype(np.int64).sum(axis=1) + 32768) % 65536 - 32768).tolist()
    assert rec.comments == ["Age: 56", "Sex: Female", "Dx: 426783006,164873001,59118001", "Rx: Unknown",
                            "Hx: Unknown", "Sx: Unknown"]
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_write_unknown_age_sex(tmp_path):
    write_challenge_record(str(tmp_path / "G000001"), np.zeros((12, 300)), FS, age=None, sex=None, dx=["164889003"],
                           sx_line=False)
    rec = wfdb.rdrecord(str(tmp_path / "G000001"))
    assert rec.sig_len == 300 and rec.checksum == [0] * 12
    assert rec.comments == ["Age: NaN", "Sex: Unknown", "Dx: 164889003", "Rx: Unknown", "Hx: Unknown"]


def test_write_rejects_bad_signal(tmp_path):
    with pytest.raises(ValueError, match=r"A\.hea: signal must be \(12, n_samples\)"):
        write_challenge_record(tmp_path / "A", np.zeros((8, 100)), FS, age=50, sex="Male", dx=["426783006"])
    with pytest.raises(ValueError, match=r"A\.hea: .*int16"):
        write_challenge_record(tmp_path / "A", np.full((12, 100), 40.0), FS, age=50, sex="Male", dx=["426783006"])
    x = np.zeros((12, 100))
    x[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"A\.hea: .*NaN"):
        write_challenge_record(tmp_path / "A", x, FS, age=50, sex="Male", dx=["426783006"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def _header_shape(path: Path) -> list[str]:
    """Header lines with the record name and the per-record numbers masked out."""
    name = path.stem
    lines = path.read_text().splitlines()
    out = [re.sub(r"^\S+ 12 500 \d+$", "NAME 12 500 N", lines[0])]
    for ln in lines[1:13]:
        t = ln.split(" ")
        out.append(" ".join([t[0].replace(name, "NAME")] + t[1:5] + ["F", "C"] + t[7:]))
    out += [re.sub(r":.*", ":", ln) for ln in lines[13:]]
    return out


@pytest.mark.parametrize("source,real", [("ptb-xl", "ptb-xl/g7/HR06001.hea"), ("georgia", "georgia/g8/E07500.hea"),
                                         ("ningbo", "ningbo/g21/JS20001.hea")])
def test_headers_mimic_real_sources(tmp_path, source, real):
    if not (SAMPLE_DIR / real).exists():
        pytest.skip(f"real Challenge sample records not found at {SAMPLE_DIR} (set CHALLENGE_SAMPLE_DIR)")
    counts = {"ptb-xl": 0, "georgia": 0, "ningbo": 0, source: 3}
    make_dataset(tmp_path, counts["ptb-xl"], counts["georgia"], counts["ningbo"], seed=0, workers=1)
    ours = next((tmp_path / source).glob("g1/*.hea"))
    assert _header_shape(ours)[1:] == _header_shape(SAMPLE_DIR / real)[1:]


# ---------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = make_dataset(root, n_ptbxl=60, n_georgia=40, n_ningbo=30, seed=3, workers=1)
    return root, summary, _read_all(root)


def test_dataset_layout_and_labels(small_dataset):
    root, summary, recs = small_dataset
    assert not list(root.glob(".tmp-*"))
    names = {s: sorted(p.name for p in recs if p.parts[-3] == s) for s in ("ptb-xl", "georgia", "ningbo")}
    assert names["ptb-xl"][0] == "HR00001.hea" and len(names["ptb-xl"]) == 60
    assert names["georgia"][0] == "E00001.hea" and len(names["georgia"]) == 40
    assert names["ningbo"][-1] == "JS00030.hea" and len(names["ningbo"]) == 30
    rhythm_idx = [CLASS_ABBREVS.index(r) for r in ("SR", "SB", "STach", "AF")]
    per_source = {s: np.zeros(9, int) for s in names}
    non_paper, short = 0, 0
    for hea, rec in recs.items():
        src = hea.parts[-3]
        assert rec.fs == FS and rec.n_sig == 12 and list(rec.sig_name) == list(LEADS12)
        assert set(rec.units) == {"mv" if src == "ptb-xl" else "mV"}
        assert any(c.startswith("Sx:") for c in rec.comments) == (src != "georgia")
        age = int(rec.comments[0].split(":")[1])
        assert rec.comments[1] in ("Sex: Male", "Sex: Female") and 5 <= age <= 95
        codes = _dx(rec)
        mh = codes_to_multihot(codes)
        assert mh[rhythm_idx].sum() == 1, f"{hea}: exactly one rhythm expected, got {codes}"
        per_source[src] += mh
        non_paper += any(c not in CLASS_CODES for c in codes)
        if rec.sig_len < 5000:
            assert src == "georgia" and 2500 <= rec.sig_len <= 4500
            short += 1
        else:
            assert rec.sig_len == 5000
        assert limb_identity_error(rec.p_signal.T) <= 2e-3
    assert (per_source["ptb-xl"] >= 2).all(), per_source["ptb-xl"]
    assert per_source["ningbo"][CLASS_ABBREVS.index("AF")] == 0
    assert (np.delete(per_source["georgia"], CLASS_ABBREVS.index("MI")) >= 2).all()
    assert short >= 1 and non_paper >= 1
    for s, counts in per_source.items():
        assert [summary["sources"][s]["class_counts"][c] for c in CLASS_ABBREVS] == counts.tolist()


def test_deterministic_across_workers(tmp_path):
    make_dataset(tmp_path / "a", 12, 8, 6, seed=11, workers=1)
    make_dataset(tmp_path / "b", 12, 8, 6, seed=11, workers=2)
    make_dataset(tmp_path / "c", 12, 8, 6, seed=12, workers=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 26 + 1
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a/ptb-xl/g1/HR00001.mat").read_bytes() != (tmp_path / "c/ptb-xl/g1/HR00001.mat").read_bytes()


def test_refuses_existing_output_unless_overwrite(tmp_path):
    make_dataset(tmp_path, 3, 0, 0, seed=0, workers=1)
    before = (tmp_path / "ptb-xl/g1/HR00001.mat").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_dataset(tmp_path, 3, 0, 0, seed=1, workers=1)
    assert (tmp_path / "ptb-xl/g1/HR00001.mat").read_bytes() == before
    make_dataset(tmp_path, 2, 0, 0, seed=1, workers=1, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "ptb-xl/g1").iterdir()) == [
        "HR00001.hea", "HR00001.mat", "HR00002.hea", "HR00002.mat"]
    assert not (tmp_path / "georgia").exists() and not list(tmp_path.glob(".tmp-*"))


def test_cli_main(tmp_path, capsys):
    args = synthetic.parse_args([str(tmp_path), "--n_ptbxl", "2", "--n_georgia", "1", "--n_ningbo", "1",
                                 "--workers", "1", "--seed", "5"])
    summary = synthetic.main(args)
    assert summary["sources"]["ningbo"]["n_records"] == 1
    assert (tmp_path / "georgia/g1/E00001.hea").exists() and (tmp_path / "synthetic.json").exists()
    assert '"ptb-xl"' in capsys.readouterr().out


# ---------------------------------------------------------------- physiology


def test_rejects_conflicting_labels():
    with pytest.raises(ValueError, match="more than one rhythm"):
        _sim(["SR", "AF"], 0)
    with pytest.raises(ValueError, match="unknown class"):
        _sim(["SR", "XYZ"], 0)


def test_limb_identities_before_quantisation():
    assert limb_identity_error(_sim(["AF", "LVH"], 2).signal) < 1e-12


@pytest.mark.parametrize("rhythm,lo,hi", [("SB", 30, 60), ("SR", 60, 100), ("STach", 100, 200)])
def test_heart_rate_per_rhythm(rhythm, lo, hi):
    for seed in range(8):
        sim = _sim([rhythm], 100 + seed)
        peaks = _r_peaks(sim.signal, "II")
        hr = 60.0 * FS / np.mean(np.diff(peaks))
        assert lo < hr < hi, f"{rhythm} seed {seed}: detected HR {hr:.1f}"
        assert abs(hr - sim.heart_rate_bpm) < 3.0


def test_af_rr_irregular():
    def cv(labels, seed):
        rr = np.diff(_r_peaks(_sim(labels, seed).signal, "II"))
        return rr.std() / rr.mean()
    cv_af = [cv(["AF"], 200 + s) for s in range(8)]
    cv_sr = [cv(["SR"], 300 + s) for s in range(8)]
    assert min(cv_af) > 0.08 and np.mean(cv_af) > 3 * np.mean(cv_sr), (cv_af, cv_sr)


def _qrs_axis(x12, peaks):
    y = sps.sosfiltfilt(_HP, x12, axis=1)
    area = np.zeros(2)
    for p in peaks[(peaks > 50) & (peaks < x12.shape[1] - 50)]:
        base = y[:, p - 45:p - 35].mean(axis=1)  # PR segment as the isoelectric reference
        seg = y[:, p - 30:p + 40] - base[:, None]
        area += seg[[LEADS12.index("I"), LEADS12.index("aVF")]].sum(axis=1)
    # aVF's lead vector has length sqrt(3)/2 on the hexaxial reference frame
    return np.degrees(np.arctan2(area[1] / (np.sqrt(3) / 2), area[0]))


def test_left_axis_deviation():
    for seed in range(8):
        lad, sr = _sim(["SR", "LAD"], 400 + seed), _sim(["SR"], 500 + seed)
        a_lad = _qrs_axis(lad.signal, _r_peaks(lad.signal, None))
        a_sr = _qrs_axis(sr.signal, _r_peaks(sr.signal, None))
        assert a_lad < -30 and a_sr > -30, (seed, a_lad, a_sr)
        assert abs(a_lad - lad.qrs_axis_deg) < 15


def test_lvh_high_voltage():
    def v5_r(labels, seed):
        sim = _sim(labels, seed)
        y = sps.sosfiltfilt(_HP, sim.signal, axis=1)[LEADS12.index("V5")]
        return np.median([y[p - 25:p + 25].max() for p in _r_peaks(sim.signal, None)[1:-1]])
    lvh = [v5_r(["SR", "LVH"], 600 + s) for s in range(10)]
    normal = [v5_r(["SR"], 700 + s) for s in range(10)]
    assert np.mean(lvh) > 1.5 * np.mean(normal), (lvh, normal)


def test_first_degree_av_block_long_pr():
    def p_to_r(labels, seed):  # P-peak to R-peak in noise-free lead II approximates PR
        sim = _sim(labels, seed, noise=False)
        x = sim.signal[LEADS12.index("II")]
        d = [(p - (p - 200 + np.argmax(x[p - 200:p - 40]))) / FS for p in _r_peaks(sim.signal, None)[1:-1]]
        return 1000 * np.median(d), sim.pr_ms
    for s in range(6):
        (pr_b, true_b), (pr_n, true_n) = p_to_r(["SB", "IAVB"], 800 + s), p_to_r(["SB"], 900 + s)
        assert true_b > 200 > true_n
        assert pr_b > 190 and pr_n < 190 and pr_b > pr_n, (pr_b, pr_n)


def test_t_wave_abnormality():
    def t_level(labels, seed):
        sim = _sim(labels, seed, noise=False)
        x = sim.signal[LEADS12.index("V5")]
        return np.mean([x[p + 90:p + 160].mean() - x[p - 45:p - 35].mean()
                        for p in _r_peaks(sim.signal, None)[1:-1]])
    tab = [t_level(["SR", "TAb"], 1000 + s) for s in range(8)]
    normal = [t_level(["SR"], 1100 + s) for s in range(8)]
    assert max(tab) < 0.12 and min(normal) > 0.05 and np.mean(normal) - np.mean(tab) > 0.2, (tab, normal)


def test_age_and_sex_change_voltage_and_qt_without_changing_the_rest_of_the_record():
    from nvae_ecg.data.synthetic import simulate_ecg

    def sim(age, sex):
        return simulate_ecg(("SR",), rng=np.random.default_rng(7), noise=False, age=age, sex=sex)

    young_m, old_f, plain = sim(30, "Male"), sim(80, "Female"), sim(None, None)
    assert np.array_equal(young_m.r_peaks_s, old_f.r_peaks_s)          # same beats: no extra RNG draw
    lead_v5 = LEADS12.index("V5")
    ratio = np.ptp(old_f.signal[lead_v5]) / np.ptp(young_m.signal[lead_v5])
    assert 0.6 < ratio < 0.85                                          # older women: lower voltage
    assert np.ptp(plain.signal[lead_v5]) != np.ptp(young_m.signal[lead_v5])


def test_demographic_scale_multiplies_the_age_and_sex_trends():
    from nvae_ecg.data.synthetic import simulate_ecg

    def v5(age, sex, scale):
        sim = simulate_ecg(("SR",), rng=np.random.default_rng(7), noise=False, age=age, sex=sex,
                           demographic_scale=scale)
        return sim.signal[LEADS12.index("V5")]

    assert np.array_equal(v5(30, "Male", 0.0), v5(80, "Female", 0.0))   # scale 0: demographics have no effect
    assert np.array_equal(v5(30, "Male", 0.0), v5(None, None, 1.0))
    ratios = [np.ptp(v5(80, "Female", k)) / np.ptp(v5(30, "Male", k)) for k in (1.0, 2.0, 3.0)]
    assert 0.6 < ratios[0] < 0.85 and ratios[0] > ratios[1] > ratios[2] > 0.1, ratios


def test_demographic_scale_outside_its_range_is_refused_before_anything_is_written(tmp_path, capsys):
    from nvae_ecg.data import synthetic

    for bad in ("-1", "6", "nan"):
        with pytest.raises(SystemExit):
            synthetic.parse_args([str(tmp_path / "out"), "--demographic_scale", bad])
        assert "--demographic_scale must be in [0, 5]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

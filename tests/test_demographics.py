"""Demographic conditions: records.csv rows of real Challenge 2021 headers (incl. missing age/sex) to condition
vectors, training statistics as plain data, seeded draws jointly with the labels, --age/--sex parsing, the optional
conditions.npy of the generated-sample format, and the report's demographic-fidelity functions on a planted case."""

import argparse
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from nvae_ecg import demographics as dem
from nvae_ecg.samples import (CONDITIONS_DTYPE, SampleWriter, make_conditions, read_conditions, read_samples,
                              write_conditions)

# Edits of real Georgia headers, spelled as the Challenge 2021 files spell missing values.
_EDITS = {"E07500": ("# Age: 78", "# Age: NaN"), "E07501": ("# Sex: Male", "# Sex: Unknown")}


@pytest.fixture(scope="module")
def prepared_real(sample_dir, tmp_path_factory):
    """The 14 real Georgia sample records, two with a missing age / sex, prepared with every record in train."""
    from nvae_ecg.data import prepare

    root = tmp_path_factory.mktemp("demo_real")
    shutil.copytree(sample_dir / "georgia", root / "raw" / "georgia")
    for name, (old, new) in _EDITS.items():
        hea = next((root / "raw" / "georgia").rglob(f"{name}.hea"))
        text = hea.read_text()
        assert old in text, f"{hea} no longer reads {old!r}"
        hea.write_text(text.replace(old, new))
    prepare.main(prepare.parse_args([str(root / "raw"), str(root / "prepared"), "--workers", "1", "--datasets",
                                     "georgia", "--no_filter", "--split_fractions", "1", "0", "0"]))
    return root / "prepared"


def _header_demographics(sample_dir):
    out = {}
    for hea in sorted((sample_dir / "georgia").rglob("*.hea")):
        meta = dict(line[2:].split(": ", 1) for line in hea.read_text().splitlines() if line.startswith("# "))
        out[hea.stem] = (float(meta["Age"]), meta["Sex"])
    return out


def test_condition_vectors_of_real_records_incl_missing(prepared_real, sample_dir):
    from nvae_ecg.data.datasets import load_prepared

    p = load_prepared(prepared_real, "georgia")
    rec = p.records.set_index("record")
    assert math.isnan(rec.loc["E07500", "age"]) and rec.loc["E07501", "sex"] == "Unknown"  # how prepare writes them
    truth = _header_demographics(sample_dir)
    stats = dem.fit_stats_prepared(prepared_real, "georgia")
    known = [a for r, (a, _) in truth.items() if r != "E07500"]
    assert stats.age_mean == pytest.approx(np.mean(known)) and stats.age_std == pytest.approx(np.std(known))
    assert (stats.n_records, stats.n_age_missing, stats.n_sex_unknown) == (14, 1, 1)
    c = dem.records_conditions(p.records, stats)
    assert c.shape == (14, dem.CONDITION_DIM) and c.dtype == np.float32
    for i, r in enumerate(p.records["record"]):
        age, sex = truth[r]
        if r == "E07500":
            np.testing.assert_array_equal(c[i], [0, 1, sex == "Male", sex == "Female"])
        elif r == "E07501":
            assert c[i, 0] == pytest.approx((age - stats.age_mean) / stats.age_std) and c[i, 1] == 0
            assert c[i, 2] == 0 and c[i, 3] == 0  # unknown sex: neither
        else:
            assert c[i, 0] == pytest.approx((age - stats.age_mean) / stats.age_std, abs=1e-6)
            np.testing.assert_array_equal(c[i, 1:], [0, sex == "Male", sex == "Female"])
    # A default pandas read (NaN for empty cells, 'NaN' strings) gives the same vectors.
    raw = pd.read_csv(prepared_real / "georgia" / "records.csv")
    raw = raw[raw["kept"]].sort_values("index")
    np.testing.assert_array_equal(dem.records_conditions(raw, stats), c)


def test_rows_with_odd_values_count_as_missing():
    rows = pd.DataFrame({"age": [70, np.nan, "NaN", 300, -1, "", 0], "sex": ["Male", "Female", "Unknown", "",
                                                                               np.nan, "female", "M"]})
    ages, sexes = dem.record_demographics(rows)
    np.testing.assert_array_equal(np.isnan(ages), [False, True, True, True, True, True, False])
    assert sexes.tolist() == ["M", "F", "", "", "", "F", "M"]
    with pytest.raises(ValueError, match="records.csv"):
        dem.record_demographics(pd.DataFrame({"age": [1]}))


def test_stats_round_trip_as_plain_floats(tmp_path):
    s = dem.fit_stats(pd.DataFrame({"age": [50.0, 70.0, np.nan], "sex": ["Male", "Female", "Unknown"]}))
    assert (s.age_mean, s.age_std, s.n_age_missing, s.n_sex_unknown) == (60.0, 10.0, 1.0, 1.0)
    d = s.to_dict()
    assert all(type(v) is float for v in d.values())
    assert dem.DemographicStats.from_dict(d) == s
    s.save(tmp_path)
    assert json.loads((tmp_path / dem.STATS_FILE).read_text()) == d and dem.DemographicStats.load(tmp_path) == s
    with pytest.raises(ValueError, match="unknown"):
        dem.DemographicStats.from_dict({**d, "bmi": 1.0})
    with pytest.raises(ValueError, match="positive"):
        dem.DemographicStats(age_mean=1.0, age_std=0.0)
    degenerate = dem.fit_stats(pd.DataFrame({"age": [np.nan, np.nan], "sex": ["Male", "Male"]}))
    assert (degenerate.age_mean, degenerate.age_std) == (0.0, 1.0)
    np.testing.assert_array_equal(dem.condition_vector(70, "F", s), np.float32([1.0, 0, 0, 1]))
    np.testing.assert_array_equal(dem.condition_vector(None, None, s), np.float32([0, 1, 0, 0]))


def test_parse_age_and_sex_with_clear_errors():
    assert dem.parse_age("70") == 70.0 and dem.parse_age(0) == 0.0 and dem.parse_age("120") == 120.0
    for bad in ("-1", "121", "nan", "old", None):
        with pytest.raises(ValueError, match="age"):
            dem.parse_age(bad)
    assert [dem.parse_sex(v) for v in ("M", "f", "Female", " male ")] == ["M", "F", "F", "M"]
    for bad in ("X", "", "Unknown", None):
        with pytest.raises(ValueError, match="M or F"):
            dem.parse_sex(bad)
    p = argparse.ArgumentParser()
    dem.add_demographic_args(p)
    a = p.parse_args(["--age", "70", "--sex", "F"])
    assert (a.age, a.sex) == (70.0, "F") and p.parse_args([]).age is None
    with pytest.raises(SystemExit):
        p.parse_args(["--age", "130"])


def test_pool_draws_jointly_with_labels_seeded():
    # AF (column 1) records are women of 80, the others men of 40; one record lacks its age.
    labels = np.array([[1, 0]] * 6 + [[0, 1]] * 3 + [[1, 1]] + [[0, 1]])
    ages = np.array([40.0] * 6 + [80.0] * 3 + [60.0] + [np.nan])
    sexes = np.array(["M"] * 6 + ["F"] * 3 + ["F"] + ["F"])
    pool = dem.DemographicPool(ages, sexes, labels)
    assert pool.n_dropped == 1
    a, s = pool.draw([0, 1], 50, np.random.default_rng(0))
    assert set(a) == {80.0} and set(s) == {"F"} and pool.last_scope == "exact"
    a2, s2 = pool.draw([0, 1], 50, np.random.default_rng(0))
    np.testing.assert_array_equal(a, a2)
    a, s = pool.draw([1, 0], 5, np.random.default_rng(1), sex="F")  # no woman in SR-only: widened
    assert set(s) == {"F"} and pool.last_scope == "superset" and set(a) == {60.0}
    a, s = pool.draw([1, 0], 4, np.random.default_rng(1), age=75.0)
    assert set(a) == {75.0} and len(s) == 4
    records = pd.DataFrame({"age": ages, "sex": np.where(sexes == "M", "Male", "Female")})
    pool9 = dem.DemographicPool.from_records(records, np.hstack([labels, labels]), class_cols=[2, 3])
    assert pool9.labels.shape == (10, 2)
    with pytest.raises(ValueError, match="no training record"):
        dem.DemographicPool(np.array([np.nan]), np.array(["M"]), np.array([[1]]))


def test_sample_folder_conditions_written_read_and_optional(tmp_path):
    x = np.zeros((2, 12, 50), np.float32)
    y = np.zeros((2, 9), np.uint8)
    with SampleWriter(tmp_path / "with", 4, length=50) as w:
        w.write(x, y, make_conditions([70, np.nan], ["F", ""]))
        w.write(x, y, make_conditions([30, 40], ["M", "M"]))
        w.close({"generator": "test"})
    s = read_samples(tmp_path / "with")
    assert s.conditions.dtype == CONDITIONS_DTYPE and s.conditions["sex"].tolist() == ["F", "", "M", "M"]
    assert s.conditions["age"][0] == 70 and np.isnan(s.conditions["age"][1])
    with SampleWriter(tmp_path / "without", 2, length=50) as w:  # the old call, unchanged
        w.write(x, y)
        w.close({"generator": "test"})
    assert read_samples(tmp_path / "without").conditions is None
    write_conditions(tmp_path / "without", make_conditions([50, 60], ["M", "F"]))
    assert read_conditions(tmp_path / "without")["age"].tolist() == [50, 60]
    assert not list((tmp_path / "without").glob(".*tmp*"))
    with pytest.raises(ValueError, match="shape"):
        write_conditions(tmp_path / "without", make_conditions([50], ["M"]))
    w = SampleWriter(tmp_path / "mixed", 4, length=50)
    w.write(x, y)
    with pytest.raises(ValueError, match="every batch"):
        w.write(x, y, make_conditions([1, 2], ["M", "F"]))
    w.abort()
    w = SampleWriter(tmp_path / "bad", 4, length=50)
    with pytest.raises(ValueError, match="dtype"):
        w.write(x, y, np.zeros(2))
    w.abort()
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="sex"):
        make_conditions([1], ["X"])


def test_fidelity_metrics_and_unconditioned_row():
    from train_test.quality import demographics as qd

    age = np.array([20.0, 40, 60, 80, np.nan])
    assert qd.age_mae(age + 2, age) == 2.0 and qd.chance_age_mae(age) == 20.0
    assert qd.age_correlation(2 * age, age) == pytest.approx(1.0) and math.isnan(qd.age_correlation(age * 0, age))
    sex = np.array(["M", "F", "M", "F", ""])
    assert qd.sex_auroc([0.9, 0.1, 0.8, 0.2, 0.5], sex) == 1.0 and qd.sex_auroc([0.1, 0.9, 0.2, 0.8, 0], sex) == 0
    assert math.isnan(qd.sex_auroc([0.5, 0.5], ["F", "F"]))  # one sex only (--sex F)
    row = qd.demographic_fidelity(age + 2, [0.9, 0.1, 0.8, 0.2, 0.5], age, sex)
    assert set(row) == set(qd.FIDELITY_KEYS) and (row["n_age"], row["n_sex"]) == (4, 4)
    assert "not conditioned" in qd.unconditioned_row("pulse2pulse")["note"]


def _planted(n, rng):
    """ECG-like arrays whose 'age' is the amplitude of a 5 Hz wave in every lead and whose sex flips lead 1."""
    age = rng.uniform(20, 80, n)
    sex = np.where(rng.random(n) < 0.5, "M", "F")
    t = np.arange(500) / 500.0
    x = rng.normal(0, 0.05, (n, 4, 500))
    x += (age / 50)[:, None, None] * np.sin(2 * np.pi * 5 * t)
    x[:, 1] += np.where(sex == "M", 1.0, -1.0)[:, None] * np.sin(2 * np.pi * 3 * t)
    return x.astype(np.float32), age, sex


def test_planted_age_and_sex_are_recovered_well_above_chance():
    from train_test.quality import demographics as qd

    rng = np.random.default_rng(0)
    x, age, sex = _planted(192, rng)
    xt, age_t, sex_t = _planted(96, rng)
    age[:5], sex[5:10] = np.nan, ""  # unknown targets are left out of the losses
    dm = qd.train_demographic_model(x, age, sex, arch="tiny", epochs=12, batch_size=32, lr=3e-3, seed=0)
    pred_age, p_male = qd.predict_demographics(dm, xt)
    row = qd.demographic_fidelity(pred_age, p_male, age_t, sex_t)
    assert row["age_mae"] < 0.5 * row["age_mae_chance"], row
    assert row["age_corr"] > 0.8 and row["sex_auroc"] > 0.9, row
    # Shuffled targets (a generator ignoring its conditions) score near chance.
    shuffled = qd.demographic_fidelity(pred_age, p_male, rng.permutation(age_t), rng.permutation(sex_t))
    assert shuffled["age_mae"] > 0.8 * shuffled["age_mae_chance"] and shuffled["sex_auroc"] < 0.75, shuffled

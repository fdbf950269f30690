"""Tests of ``python -m nvae_ecg.data.prepare``: outputs on the real sample, resampling, bad input, splits, atomicity."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks, resample_poly

from nvae_ecg.classes import CLASS_CODES
from nvae_ecg.data import prepare
from nvae_ecg.data.challenge import write_challenge_record
from nvae_ecg.leads import INDEPENDENT_IDX, LEADS12, limb_identity_error

DATASETS = ("ptb-xl", "georgia", "ningbo")


def run(raw: Path, out: Path, *flags: str, workers: int = 1) -> dict:
    """Call the entry point in this process (so monkeypatches apply) and return its summary."""
    return prepare.main(prepare.parse_args([str(raw), str(out), "--workers", str(workers), *flags]))


def records(out: Path, ds: str) -> pd.DataFrame:
    return pd.read_csv(out / ds / "records.csv", dtype={"record": str, "dx": str}, keep_default_na=False)


def raw_mv(hea: Path) -> np.ndarray:
    """A sample record read without wfdb: int16 after the 24-byte MAT preamble / 1000 (gain 1000, baseline 0)."""
    return np.fromfile(hea.with_suffix(".mat"), dtype="<i2", offset=24).reshape(-1, 12).T / 1000.0


def dx_of(hea: Path) -> list[str]:
    """Dx codes by plain string parsing of the header."""
    for line in hea.read_text().splitlines():
        if line.startswith("#") and line[1:].strip().startswith("Dx"):
            return [c.strip() for c in line.split(":", 1)[1].split(",") if c.strip()]
    raise AssertionError(f"{hea} has no Dx line")


def copy_as(src_hea: Path, dst_dir: Path, name: str) -> Path:
    """Copy a real record under a new record name (header names and .mat renamed consistently)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    text = src_hea.read_text().replace(src_hea.stem, name)
    (dst_dir / f"{name}.hea").write_text(text)
    shutil.copy(src_hea.with_suffix(".mat"), dst_dir / f"{name}.mat")
    return dst_dir / f"{name}.hea"


def _set_checksum(hea: Path, lead_row: int, samples: np.ndarray) -> None:
    lines = hea.read_text().splitlines()
    parts = lines[1 + lead_row].split()
    s = int(samples.astype(np.int64).sum() % 65536)
    parts[6] = str(s - 65536 if s >= 32768 else s)
    lines[1 + lead_row] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ real sample
@pytest.fixture(scope="module")
def prepared_sample(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared_sample")
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        summary = run(sample_dir, out, workers=2)  # exercises the process pool
    return out, summary, buf_out.getvalue()


def test_sample_outputs_shapes_dtypes_and_labels(sample_dir, prepared_sample):
    out, summary, _ = prepared_sample
    for ds in DATASETS:
        heas = sorted((sample_dir / ds).rglob("*.hea"))
        rec = records(out, ds)
        assert list(rec.columns)[:11] == ["record", "path", "age", "sex", "dx", "fs", "n_samples", "kept", "reason",
                                          "index", "split"]
        assert sorted(rec["record"]) == sorted(h.stem for h in heas)  # one row per record found
        kept = rec[rec["kept"]].sort_values("index")
        signals = np.load(out / ds / "signals.npy", mmap_mode="r")
        labels = np.load(out / ds / "labels.npy")
        assert signals.dtype == np.float32 and signals.shape == (len(kept), 12, 5000)
        assert labels.dtype == np.uint8 and labels.shape == (len(kept), 9)
        assert list(kept["index"]) == list(range(len(kept)))
        assert set(kept["split"]) <= {"train", "val", "test"} and (rec.loc[~rec["kept"], "index"] == -1).all()
        by_name = {h.stem: h for h in heas}
        for _, row in rec.iterrows():
            assert row["dx"].split(";") == dx_of(by_name[row["record"]])
        for _, row in kept.iterrows():
            codes = dx_of(by_name[row["record"]])
            expect = np.array([c in codes for c in CLASS_CODES], dtype=np.uint8)
            np.testing.assert_array_equal(labels[row["index"]], expect)
            # 500 Hz, 10 s records are stored as read: int16 / 1000 in float32.
            np.testing.assert_array_equal(signals[row["index"]], raw_mv(by_name[row["record"]]).astype(np.float32))
        assert summary["datasets"][ds]["n_kept"] == len(kept)


def test_sample_lead_identities_on_stored_signals(prepared_sample):
    out, _, _ = prepared_sample
    for ds in DATASETS:
        x = np.load(out / ds / "signals.npy").astype(np.float64)
        # 1 uV storage rounding gives <= 1.5 uV on II = I + III; Ningbo's augmented leads reach 3.5 uV
        # (device ADC step ~4.9 uV), float32 adds < 1e-6 mV.
        assert np.max(np.abs(x[:, 1] - x[:, 0] - x[:, 2])) <= 1.5e-3 + 1e-6
        assert limb_identity_error(x) <= 4e-3


def test_sample_bounds_are_the_paper_percentiles_and_filter_the_band(sample_dir, prepared_sample):
    out, _, _ = prepared_sample
    for ds in DATASETS:
        rec = records(out, ds)
        by_name = {h.stem: h for h in (sample_dir / ds).rglob("*.hea")}
        x8 = {r: raw_mv(h)[list(INDEPENDENT_IDX)].astype(np.float32) for r, h in by_name.items()}
        names = sorted(x8)
        mins = np.array([x8[r].min(axis=1) for r in names], dtype=np.float64)
        maxs = np.array([x8[r].max(axis=1) for r in names], dtype=np.float64)
        b = json.loads((out / ds / "bounds.json").read_text())
        assert b["leads"] == ["I", "III", "V1", "V2", "V3", "V4", "V5", "V6"]
        np.testing.assert_allclose(b["lower"], np.percentile(mins, 2.5, axis=0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(b["upper"], np.percentile(maxs, 97.5, axis=0), rtol=0, atol=1e-9)
        inside = np.all(mins >= np.array(b["lower"]), axis=1) & np.all(maxs <= np.array(b["upper"]), axis=1)
        kept = dict(zip(rec["record"], rec["kept"]))
        reason = dict(zip(rec["record"], rec["reason"]))
        for r, ok in zip(names, inside):
            assert kept[r] == bool(ok), r
            assert reason[r] == ("" if ok else "outlier"), r


def test_sample_report_counts(prepared_sample):
    out, summary, console = prepared_sample
    for ds in DATASETS:
        rec = records(out, ds)
        n_kept, n_out = int(rec["kept"].sum()), int((rec["reason"] == "outlier").sum())
        line = next(ln for ln in console.splitlines() if ln.startswith(ds + " "))
        fields = line.split()
        assert fields[1] == "ok" and int(fields[2]) == len(rec) and int(fields[5]) == n_out and int(fields[6]) == n_kept
        per = json.loads((out / ds / "prepare.json").read_text())
        assert per["n_kept"] == n_kept and per["skipped_by_reason"].get("outlier", 0) == n_out
        assert sum(per["splits"].values()) == n_kept
        assert {"numpy", "scipy", "wfdb"} <= set(per["versions"]) and per["flags"]["seed"] == 0
    assert json.loads((out / "prepare.json").read_text())["datasets"].keys() == set(DATASETS)


# ------------------------------------------------------------------ resampling and padding
def test_other_sampling_rates_and_short_record(sample_dir, tmp_path):
    src = sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0]
    x = raw_mv(src)
    raw = tmp_path / "raw"
    ds = raw / "ptb-xl" / "g1"
    write_challenge_record(ds / "HR09001", resample_poly(x, 2, 1, axis=1), 1000, dx=dx_of(src))
    write_challenge_record(ds / "HR09002", resample_poly(x, 1, 2, axis=1), 250, dx=dx_of(src))
    write_challenge_record(ds / "HR09003", x[:, :3500], 500, dx=dx_of(src))  # 7 s
    out = tmp_path / "out"
    run(raw, out, "--datasets", "ptb-xl", "--no_filter")
    rec = records(out, "ptb-xl").set_index("record")
    sig = np.load(out / "ptb-xl" / "signals.npy")
    assert sig.shape == (3, 12, 5000)
    assert rec.loc["HR09001", "fs"] == 1000 and rec.loc["HR09001", "n_samples"] == 10000
    assert rec.loc["HR09002", "fs"] == 250 and rec.loc["HR09002", "n_samples"] == 2500
    assert rec.loc["HR09003", "n_samples"] == 3500

    def r_peaks(v):
        lead = v[1]  # lead II
        return find_peaks(lead, prominence=0.5 * np.ptp(lead), distance=150)[0]

    ref = r_peaks(x)
    assert len(ref) >= 8  # a real rhythm to compare against
    for name, tol in (("HR09001", 1), ("HR09002", 2)):
        got = r_peaks(sig[rec.loc[name, "index"]])
        assert len(got) == len(ref), name  # same heart rate: no stretching
        assert np.max(np.abs(got - ref)) <= tol, name
    up = sig[rec.loc["HR09001", "index"]]
    assert np.max(np.abs(up[:, 50:-50] - x[:, 50:-50])) < 0.02  # 1 kHz -> 500 Hz reproduces the record (mV)
    short = sig[rec.loc["HR09003", "index"]]
    np.testing.assert_allclose(short[:, :3500], x[:, :3500], atol=1e-6)  # padded, not stretched
    assert np.all(short[:, 3500:] == 0)


# ------------------------------------------------------------------ bad input
BROKEN = {
    # kind: (record name, expected reason)
    "no_mat": ("HR07001", "missing_signal_file"),
    "truncated_mat": ("HR07002", "unreadable_signal"),
    "corrupt_mat": ("HR07003", "checksum_mismatch"),
    "corrupt_header": ("HR07004", "unreadable_header"),
    "renamed_lead": ("HR07005", "wrong_leads"),
    "eleven_leads": ("HR07006", "wrong_leads"),
    "nan_marker": ("HR07007", "non_finite"),
    "missing_dx": ("HR07008", "missing_dx"),
    "fs_zero": ("HR07009", "invalid_fs"),
    "fs_unparseable": ("HR07010", "invalid_fs"),
    "mat_without_header": ("HR07011", "missing_header"),
    "too_short": ("HR07012", "too_short"),
    "gain_zero": ("HR07013", "bad_units"),  # wfdb would read it with its default gain 200, 5x too large
}


def make_broken(kind: str, src: Path, folder: Path) -> Path:
    """A deliberately broken copy of a real record; returns the file the error message must name (.hea or .mat)."""
    name = BROKEN[kind][0]
    hea = copy_as(src, folder, name)
    mat = hea.with_suffix(".mat")
    text = hea.read_text()
    first = text.splitlines()[0]
    if kind == "no_mat":
        mat.unlink()
    elif kind == "truncated_mat":
        mat.write_bytes(mat.read_bytes()[:60_000])
        return mat
    elif kind == "corrupt_mat":
        b = bytearray(mat.read_bytes())
        b[5000:5010] = b"\x7f" * 10
        mat.write_bytes(bytes(b))
        return mat
    elif kind == "corrupt_header":
        hea.write_bytes(b"\x00\xff garbage \x01" * 20)
    elif kind == "renamed_lead":
        hea.write_text(text.replace(" aVL\n", " aVX\n"))
    elif kind == "eleven_leads":
        hea.unlink()
        mat.unlink()
        hea, mat = write_challenge_record(folder / name, raw_mv(src)[:11], 500, leads=LEADS12[:11], dx=dx_of(src))
    elif kind == "nan_marker":
        d = np.fromfile(mat, dtype="<i2", offset=24).reshape(-1, 12).copy()
        d[200, 7] = -32768  # WFDB invalid-sample marker, read as NaN; checksum kept consistent
        mat.write_bytes(mat.read_bytes()[:24] + d.astype("<i2").tobytes())
        _set_checksum(hea, 7, d[:, 7])
        return mat
    elif kind == "missing_dx":
        hea.write_text("\n".join(ln for ln in text.splitlines() if "Dx" not in ln) + "\n")
    elif kind == "fs_zero":
        hea.write_text(text.replace(first, first.replace(" 500 ", " 0 ")))
    elif kind == "fs_unparseable":
        hea.write_text(text.replace(first, first.replace(" 500 ", " 500Hz ")))
    elif kind == "mat_without_header":
        hea.unlink()
        return mat
    elif kind == "gain_zero":
        lines = text.splitlines()
        parts = lines[3].split()  # lead III
        parts[2] = "0" + parts[2][parts[2].index("("):]  # 1000.0(0)/mv -> 0(0)/mv
        lines[3] = " ".join(parts)
        hea.write_text("\n".join(lines) + "\n")
    elif kind == "too_short":
        hea.unlink()
        mat.unlink()
        hea, mat = write_challenge_record(folder / name, raw_mv(src)[:, :2000], 500, dx=dx_of(src))  # 4 s
    return hea


@pytest.fixture
def broken_raw(sample_dir, tmp_path):
    """ptb-xl with 3 good copies, one copy with reordered leads and every broken kind; georgia empty; ningbo absent."""
    srcs = sorted((sample_dir / "ptb-xl").rglob("*.hea"))[:3]
    raw = tmp_path / "raw"
    for k, s in enumerate(srcs):
        copy_as(s, raw / "ptb-xl" / "g1", f"HR0800{k}")
    hea = copy_as(srcs[0], raw / "ptb-xl" / "g2", "HR08009")
    lines = hea.read_text().splitlines()
    perm = list(range(11, -1, -1))  # leads stored in reverse order (header and .mat columns)
    hea.write_text("\n".join([lines[0]] + [lines[1 + p] for p in perm] + lines[13:]) + "\n")
    d = np.fromfile(hea.with_suffix(".mat"), dtype="<i2", offset=24).reshape(-1, 12)[:, perm]
    hea.with_suffix(".mat").write_bytes(hea.with_suffix(".mat").read_bytes()[:24] + np.ascontiguousarray(d).tobytes())
    named = {kind: make_broken(kind, srcs[0], raw / "ptb-xl" / "g3") for kind in BROKEN}
    (raw / "georgia" / "g1").mkdir(parents=True)
    return raw, srcs, named


def test_bad_inputs_are_skipped_with_reasons(broken_raw, tmp_path, capsys):
    raw, srcs, named = broken_raw
    out = tmp_path / "out"
    summary = run(raw, out, "--no_filter")
    console = capsys.readouterr()
    rec = records(out, "ptb-xl").set_index("record")
    for kind, (name, reason) in BROKEN.items():
        assert rec.loc[name, "reason"] == reason, kind
        assert not rec.loc[name, "kept"] and rec.loc[name, "index"] == -1
        assert Path(named[kind]).name in rec.loc[name, "detail"], kind
        assert str(named[kind]) in console.err, kind  # each skip message names its file
    assert list(rec.index[rec["kept"]]) == ["HR08000", "HR08001", "HR08002", "HR08009"]
    sig = np.load(out / "ptb-xl" / "signals.npy")
    np.testing.assert_array_equal(sig[rec.loc["HR08009", "index"]], raw_mv(srcs[0]).astype(np.float32))
    per = summary["datasets"]["ptb-xl"]
    expected = pd.Series([r for _, r in BROKEN.values()]).value_counts().to_dict()
    assert per["skipped_by_reason"] == expected and per["n_skipped"] == len(BROKEN) and per["n_kept"] == 4
    assert summary["datasets"]["georgia"]["status"] == "empty_folder"
    assert summary["datasets"]["ningbo"]["status"] == "missing_folder"
    for reason in set(expected):
        assert f"ptb-xl    {reason}" in console.out  # the summary table lists counts by reason
    assert "empty_folder" in console.out and "missing_folder" in console.out
    assert not (out / "georgia").exists() and not (out / "ningbo").exists()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_strict_fails_naming_the_file(sample_dir, tmp_path, capsys, kind):
    srcs = sorted((sample_dir / "ptb-xl").rglob("*.hea"))[:2]
    raw = tmp_path / "raw"
    for k, s in enumerate(srcs):
        copy_as(s, raw / "ptb-xl", f"HR0800{k}")
    bad = make_broken(kind, srcs[0], raw / "ptb-xl" / "sub")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run(raw, out, "--datasets", "ptb-xl", "--strict")
    assert info.value.code != 0
    assert str(bad) in capsys.readouterr().err
    assert not (out / "ptb-xl").exists()
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_strict_fails_on_empty_or_missing_dataset_folder(sample_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    copy_as(sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0], raw / "ptb-xl", "HR08000")
    (raw / "georgia").mkdir()
    for ds in ("georgia", "ningbo"):
        with pytest.raises(SystemExit) as info:
            run(raw, tmp_path / "out", "--datasets", "ptb-xl", ds, "--strict")
        assert info.value.code != 0 and str(raw / ds) in capsys.readouterr().err


def test_no_usable_records_exits_non_zero(sample_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    src = sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0]
    make_broken("missing_dx", src, raw / "ptb-xl")
    make_broken("fs_zero", src, raw / "ptb-xl")
    with pytest.raises(SystemExit) as info:
        run(raw, tmp_path / "out", "--datasets", "ptb-xl", "georgia")
    err = capsys.readouterr().err
    assert info.value.code != 0 and "no dataset" in err and "HR07008" in err
    with pytest.raises(SystemExit) as info:
        run(tmp_path / "nowhere", tmp_path / "out")
    assert info.value.code != 0 and "nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------ splits
def test_strat_fold_split_from_handmade_database(sample_dir, tmp_path, capsys):
    heas = sorted((sample_dir / "ptb-xl").rglob("*.hea"))
    folds = [1, 9, 10, 8, 2, 10, 9]
    db = tmp_path / "ptbxl_database.csv"
    db.write_text("ecg_id,patient_id,strat_fold\n" + "".join(
        f"{int(h.stem[2:])},{100 + k},{f}\n" for k, (h, f) in enumerate(zip(heas, folds))) + "99999,1,3\n")
    out = tmp_path / "out"
    summary = run(sample_dir, out, "--datasets", "ptb-xl", "--no_filter", "--ptbxl_database", str(db))
    rec = records(out, "ptb-xl").set_index("record")
    for h, f in zip(heas, folds):
        assert rec.loc[h.stem, "split"] == ("train" if f <= 8 else "val" if f == 9 else "test")
    assert summary["datasets"]["ptb-xl"]["split_mode"] == "strat_fold"
    # An explicit random mode ignores the database.
    run(sample_dir, out, "--datasets", "ptb-xl", "--no_filter", "--ptbxl_database", str(db), "--split_mode", "random")
    assert json.loads((out / "ptb-xl" / "prepare.json").read_text())["split_mode"] == "random"
    # A record missing from the database is an error naming it.
    db.write_text("ecg_id,strat_fold\n6000,1\n")
    with pytest.raises(SystemExit):
        run(sample_dir, tmp_path / "out2", "--datasets", "ptb-xl", "--no_filter", "--ptbxl_database", str(db))
    assert "6001" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        prepare.parse_args([str(sample_dir), str(out), "--split_mode", "strat_fold"])
    assert info.value.code == 2


def test_random_split_fractions_and_seed(synthetic_raw, tmp_path):
    splits = {}
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        run(synthetic_raw, tmp_path / name, "--datasets", "ptb-xl", "--seed", str(seed), "--no_filter")
        rec = records(tmp_path / name, "ptb-xl")
        splits[name] = list(rec["split"])
    assert splits["a"] == splits["b"] and splits["a"] != splits["c"]
    counts = pd.Series(splits["a"]).value_counts()
    n = len(splits["a"])
    assert counts["val"] == round(0.1 * n) and counts["test"] == round(0.1 * n) and counts["train"] == n - 2 * round(0.1 * n)
    with pytest.raises(SystemExit):
        prepare.parse_args(["r", "o", "--split_fractions", "0.8", "0.3", "0.1"])


def test_random_split_helper():
    labels = prepare.random_split(1000, (0.8, 0.1, 0.1), np.random.default_rng(0))
    assert (labels == "train").sum() == 800 and (labels == "val").sum() == 100 and (labels == "test").sum() == 100
    assert prepare.ptbxl_ecg_id("HR00001") == 1 and prepare.ptbxl_ecg_id("HR21837") == 21837


# ------------------------------------------------------------------ atomic output
def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("where", ["reading", "writing"])
def test_failure_mid_run_keeps_previous_output(sample_dir, tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    run(sample_dir, out, "--datasets", "ptb-xl")
    before = _snapshot(out / "ptb-xl")
    if where == "reading":
        calls = {"n": 0}
        real = prepare.read_record

        def flaky(path):
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("injected crash while reading")
            return real(path)

        monkeypatch.setattr(prepare, "read_record", flaky)
    else:
        def broken_copy(*a, **k):
            raise OSError("injected: disk full")

        monkeypatch.setattr(prepare, "_copy_rows", broken_copy)
    with pytest.raises((RuntimeError, OSError), match="injected"):
        run(sample_dir, out, "--datasets", "ptb-xl", "--no_filter")
    assert _snapshot(out / "ptb-xl") == before
    assert sorted(p.name for p in out.iterdir()) == ["prepare.json", "ptb-xl"]  # no temp folder left


def test_rerun_replaces_dataset_and_cleans_stale_temp(sample_dir, tmp_path):
    out = tmp_path / "out"
    run(sample_dir, out, "--datasets", "ptb-xl")
    n_filtered = np.load(out / "ptb-xl" / "labels.npy").shape[0]
    dead = 2 ** 22 + 12345
    while prepare._pid_alive(dead):
        dead += 1
    (out / f".tmp-ptb-xl-{dead}").mkdir()
    run(sample_dir, out, "--datasets", "ptb-xl", "--no_filter")
    assert np.load(out / "ptb-xl" / "labels.npy").shape[0] == 7 > n_filtered
    assert np.load(out / "ptb-xl" / "signals.npy", mmap_mode="r").shape[0] == 7
    assert sorted(p.name for p in out.iterdir()) == ["prepare.json", "ptb-xl"]


# ------------------------------------------------------------------ OUT_DIR holds exactly what prepare.json describes
def assert_out_matches_prepare_json(out: Path) -> dict:
    """Every dataset folder in OUT_DIR is listed as ok in OUT_DIR/prepare.json and vice versa; no temp folder left."""
    overall = json.loads((out / "prepare.json").read_text())
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders == {n for n, d in overall["datasets"].items() if d["status"] == "ok"}
    for name in folders:
        per = json.loads((out / name / "prepare.json").read_text())
        assert per["n_kept"] == overall["datasets"][name]["n_kept"] == np.load(out / name / "labels.npy").shape[0]
    return overall


def test_rerun_removes_datasets_skipped_in_this_run(sample_dir, tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(sample_dir, raw, ignore=shutil.ignore_patterns("README*", "SHA256SUMS"))
    run(raw, out)
    assert_out_matches_prepare_json(out)
    assert {p.name for p in out.iterdir()} == {"prepare.json", *DATASETS}

    # georgia emptied, ningbo gone: their folders of the first run must not survive to feed the benchmarks.
    shutil.rmtree(raw / "georgia")
    (raw / "georgia").mkdir()
    shutil.rmtree(raw / "ningbo")
    summary = run(raw, out)
    assert summary["datasets"]["georgia"]["status"] == "empty_folder"
    assert summary["datasets"]["ningbo"]["status"] == "missing_folder"
    assert not (out / "georgia").exists() and not (out / "ningbo").exists()
    overall = assert_out_matches_prepare_json(out)
    assert overall["datasets"]["georgia"]["status"] == "empty_folder" and overall["datasets_from_earlier_runs"] == []
    assert f"removed {out / 'georgia'}" in capsys.readouterr().err

    # A dataset whose records are all unusable is removed too.
    for hea in (raw / "ptb-xl").rglob("*.hea"):
        hea.write_text("\n".join(ln for ln in hea.read_text().splitlines() if "Dx" not in ln) + "\n")
    with pytest.raises(SystemExit) as info:  # nothing usable at all: exit 1 and OUT_DIR left exactly as it was
        run(raw, out, "--datasets", "ptb-xl")
    assert info.value.code != 0 and (out / "ptb-xl" / "signals.npy").is_file()
    assert assert_out_matches_prepare_json(out) == overall


def test_datasets_not_selected_are_kept_and_listed(sample_dir, tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for ds in ("ptb-xl", "georgia"):
        shutil.copytree(sample_dir / ds, raw / ds)
    run(raw, out, "--datasets", "ptb-xl", "georgia")
    n_georgia = json.loads((out / "georgia" / "prepare.json").read_text())["n_kept"]
    for hea in (raw / "ptb-xl").rglob("*.hea"):
        hea.write_text("\n".join(ln for ln in hea.read_text().splitlines() if "Dx" not in ln) + "\n")
    shutil.copytree(sample_dir / "ningbo", raw / "ningbo")
    summary = run(raw, out, "--datasets", "ptb-xl", "ningbo")  # ptb-xl now unusable, georgia not selected
    assert summary["datasets"]["ptb-xl"]["status"] == "no_usable_records"
    assert summary["datasets"]["georgia"]["n_kept"] == n_georgia and summary["datasets_from_earlier_runs"] == ["georgia"]
    assert {p.name for p in out.iterdir()} == {"prepare.json", "georgia", "ningbo"}
    assert_out_matches_prepare_json(out)
    # A dataset folder not written by prepare (no prepare.json) is refused, not silently listed or deleted.
    (out / "georgia" / "prepare.json").unlink()
    with pytest.raises(SystemExit):
        run(raw, out, "--datasets", "ningbo")
    assert f"{out / 'georgia'} has no valid prepare.json" in capsys.readouterr().err
    assert (out / "georgia" / "signals.npy").is_file()


def test_removed_dataset_of_a_killed_run_is_not_restored(tmp_path):
    out = tmp_path / "out"
    dead = 2 ** 22 + 54321
    while prepare._pid_alive(dead):
        dead += 1
    (out / f".del-georgia-{dead}").mkdir(parents=True)  # a run killed between removing georgia and deleting it
    notes = prepare.clean_stale(out)
    assert not (out / "georgia").exists() and list(out.iterdir()) == [] and len(notes) == 1

"""Tests of the Challenge 2021 WFDB reader on the real sample records and on deliberately broken copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nvae_ecg.data import challenge
from nvae_ecg.data.challenge import (
    RecordError,
    fit_length,
    parse_age,
    parse_comments,
    read_header,
    read_record,
    resample_to,
    write_challenge_record,
)
from nvae_ecg.leads import LEADS12, limb_identity_error


def _raw_int16(mat: Path, n_leads: int = 12) -> np.ndarray:
    """The .mat samples read independently of wfdb: int16 after the 24-byte MAT v4 preamble, (leads, samples)."""
    return np.fromfile(mat, dtype="<i2", offset=24).reshape(-1, n_leads).T


def _header_fields(hea: Path) -> dict:
    """Age/Sex/Dx and lead names parsed with plain string operations (independent of the reader)."""
    lines = hea.read_text().splitlines()
    out = {"leads": [ln.split()[-1] for ln in lines[1:] if ln.strip() and not ln.startswith("#")]}
    for ln in lines:
        if ln.startswith("#") and ":" in ln:
            k, v = ln[1:].split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _copy(hea: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(hea, dst / hea.name)
    shutil.copy(hea.with_suffix(".mat"), dst / hea.with_suffix(".mat").name)
    return dst / hea.name


def _all_headers(sample_dir: Path) -> list[Path]:
    return sorted(sample_dir.rglob("*.hea"))


def test_reads_every_sample_record_in_mv(sample_dir):
    heas = _all_headers(sample_dir)
    assert len(heas) == 35
    for hea in heas:
        rec = read_record(hea)
        fields = _header_fields(hea)
        assert rec.signal.shape == (12, 5000) and rec.fs == 500.0
        assert rec.dx == [c.strip() for c in fields["Dx"].split(",")]
        assert rec.header.sex == fields["Sex"]
        assert rec.header.age == float(fields["Age"])
        assert fields["leads"] == list(LEADS12)
        # Gain 1000/mV, baseline 0 in every sample header: physical value = int16 / 1000 exactly.
        np.testing.assert_allclose(rec.signal, _raw_int16(hea.with_suffix(".mat")) / 1000.0, rtol=0, atol=1e-12)


def test_lowercase_mv_units_are_millivolts(sample_dir):
    hea = sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0]
    assert "/mv " in hea.read_text()  # the real PTB-XL quirk this test is about
    rec = read_record(hea)
    raw = _raw_int16(hea.with_suffix(".mat"))
    assert np.max(np.abs(rec.signal)) < 20  # mV scale, not uV or V
    np.testing.assert_allclose(rec.signal, raw / 1000.0, atol=1e-12)


def test_limb_identities_hold_within_quantisation(sample_dir):
    # Stored at 1 uV: independently rounded leads violate II = I + III by at most 3 x 0.5 uV.
    # Ningbo's augmented leads carry the device's ~4.9 uV ADC step (measured: up to 3.5 uV), hence 4 uV overall.
    for hea in _all_headers(sample_dir):
        x = read_record(hea).signal
        assert np.max(np.abs(x[1] - x[0] - x[2])) <= 1.5e-3 + 1e-9, hea
        assert limb_identity_error(x) <= 4e-3, hea


def test_dx_with_space_quirk_and_comment_parsing():
    meta = parse_comments(["# Age: 29", "#Sex: Male", "# Dx: 426177001,426783006", "no colon"])
    assert meta == {"Age": "29", "Sex": "Male", "Dx": "426177001,426783006"}
    assert np.isnan(parse_age("NaN")) and np.isnan(parse_age("Unknown")) and parse_age("61") == 61.0


def test_reordered_leads_are_put_in_challenge_order(sample_dir, tmp_path):
    hea = _copy(sorted((sample_dir / "georgia").rglob("*.hea"))[0], tmp_path)
    ref = read_record(hea).signal
    lines = hea.read_text().splitlines()
    perm = [3, 0, 11, 1, 2, 4, 5, 6, 7, 10, 8, 9]
    # The header's signal lines are reordered; the .mat columns must follow, so rewrite both consistently.
    hea.write_text("\n".join([lines[0]] + [lines[1 + p] for p in perm] + lines[13:]) + "\n")
    raw = _raw_int16(hea.with_suffix(".mat"))[perm]
    pre = hea.with_suffix(".mat").read_bytes()[:24]
    hea.with_suffix(".mat").write_bytes(pre + np.ascontiguousarray(raw.T).astype("<i2").tobytes())
    rec = read_record(hea)
    assert rec.header.leads == [LEADS12[p] for p in perm]
    np.testing.assert_allclose(rec.signal, ref, atol=1e-12)


def test_microvolt_units_are_rescaled(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(12, 1000))
    hea, _ = write_challenge_record(tmp_path / "U1", x * 1000.0, 500, gain=1.0, units="uV")
    np.testing.assert_allclose(read_record(hea).signal, np.round(x * 1000) / 1000, atol=1e-9)


def test_non_integer_gain_is_written_exactly(tmp_path):
    # A rounded gain in the header (e.g. 204.9 for 204.918...) would rescale every sample slightly wrong.
    gain = 1000.0 / 4.88  # Georgia/Ningbo-like 4.88 uV steps
    x = np.random.default_rng(2).normal(0, 0.4, size=(12, 800))
    hea, _ = write_challenge_record(tmp_path / "E00001", x, 500, gain=gain, age=float("nan"), sex=None)
    np.testing.assert_allclose(read_record(hea).signal, np.round(x * gain) / gain, rtol=0, atol=1e-12)
    comments = hea.read_text().splitlines()[13:]
    assert comments[:2] == ["# Age: NaN", "# Sex: Unknown"] and comments[-1] == "# Sx: Unknown"


def test_write_read_roundtrip_and_header_reader(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.5, size=(12, 2500))
    hea, mat = write_challenge_record(tmp_path / "HR00042", x, 250, age=70, sex="Female", dx=["164889003", "59118001"])
    h = read_header(hea)
    assert (h.fs, h.n_samples, h.age, h.sex, h.dx) == (250.0, 2500, 70.0, "Female", ["164889003", "59118001"])
    np.testing.assert_allclose(read_record(hea).signal, np.round(x * 1000) / 1000, atol=1e-9)
    assert mat.stat().st_size == 24 + 12 * 2500 * 2


@pytest.mark.parametrize(
    "mutate, reason",
    [
        ("no_mat", "missing_signal_file"),
        ("truncated_mat", "unreadable_signal"),
        ("trailing_garbage_mat", "unreadable_signal"),
        ("flipped_bytes_mat", "checksum_mismatch"),
        ("binary_garbage_header", "unreadable_header"),
        ("malformed_signal_line", "unreadable_header"),
        ("renamed_lead", "wrong_leads"),
        ("missing_dx", "missing_dx"),
        ("empty_dx", "missing_dx"),
        ("text_dx", "invalid_dx"),
        ("fs_zero", "invalid_fs"),
        ("fs_text", "invalid_fs"),
        ("fs_absent", "invalid_fs"),
        ("volts_per_furlong", "bad_units"),
        ("gain_zero_every_lead", "bad_units"),
        ("gain_negative", "bad_units"),
    ],
)
def test_broken_copies_raise_record_error_naming_the_file(sample_dir, tmp_path, mutate, reason):
    hea = _copy(sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0], tmp_path)
    mat = hea.with_suffix(".mat")
    text = hea.read_text()
    lines = text.splitlines()
    if mutate == "no_mat":
        mat.unlink()
    elif mutate == "truncated_mat":
        mat.write_bytes(mat.read_bytes()[:50_000])
    elif mutate == "trailing_garbage_mat":
        mat.write_bytes(mat.read_bytes() + b"\x00" * 24)
    elif mutate == "flipped_bytes_mat":
        b = bytearray(mat.read_bytes())
        b[1000:1004] = bytes(255 - v for v in b[1000:1004])
        mat.write_bytes(bytes(b))
    elif mutate == "binary_garbage_header":
        hea.write_bytes(bytes(range(256)) * 2)
    elif mutate == "malformed_signal_line":
        hea.write_text(text.replace(lines[1], "HR0600x.mat sixteen garbage"))
    elif mutate == "renamed_lead":
        hea.write_text(text.replace(" V6\n", " V7\n"))
    elif mutate == "missing_dx":
        hea.write_text("\n".join(ln for ln in lines if not ln.startswith("# Dx")) + "\n")
    elif mutate == "empty_dx":
        hea.write_text("\n".join("# Dx: " if ln.startswith("# Dx") else ln for ln in lines) + "\n")
    elif mutate == "text_dx":
        hea.write_text("\n".join("# Dx: sinus rhythm" if ln.startswith("# Dx") else ln for ln in lines) + "\n")
    elif mutate == "fs_zero":
        hea.write_text(text.replace(lines[0], lines[0].replace(" 500 ", " 0 ")))
    elif mutate == "fs_text":
        hea.write_text(text.replace(lines[0], lines[0].replace(" 500 ", " fast ")))
    elif mutate == "fs_absent":
        hea.write_text(text.replace(lines[0], " ".join(lines[0].split()[:2])))
    elif mutate == "volts_per_furlong":
        hea.write_text(text.replace("/mv", "/furlong"))
    elif mutate == "gain_zero_every_lead":
        hea.write_text(text.replace(" 1000.0(0)/mv ", " 0(0)/mv "))
    elif mutate == "gain_negative":
        hea.write_text(text.replace(lines[4], lines[4].replace(" 1000.0(0)/mv ", " -1000.0(0)/mv ")))
    with pytest.raises(RecordError) as info:
        read_record(hea)
    assert info.value.reason == reason
    assert hea.stem in str(info.value)  # the message names the file


def _set_gain_field(hea: Path, lead_row: int, field: str) -> None:
    """Replace the gain field (third token) of one signal line of a header."""
    lines = hea.read_text().splitlines()
    parts = lines[1 + lead_row].split()
    parts[2] = field
    lines[1 + lead_row] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("ds", ["ptb-xl", "georgia"])
def test_zero_gain_is_rejected_not_read_as_wfdb_default(sample_dir, tmp_path, ds):
    # wfdb turns a gain of 0 into its default 200, which would read this lead 1000/200 = 5x too large.
    hea = _copy(sorted((sample_dir / ds).rglob("*.hea"))[0], tmp_path)
    units = "mv" if ds == "ptb-xl" else "mV"
    _set_gain_field(hea, 8, f"0(0)/{units}")  # lead V3 only
    assert challenge.wfdb.rdheader(str(hea.with_suffix(""))).adc_gain[8] == 200.0  # the wfdb behaviour guarded against
    with pytest.raises(RecordError, match="V3") as info:
        read_record(hea)
    assert info.value.reason == "bad_units" and str(hea) in str(info.value) and "0(0)" in str(info.value)


@pytest.mark.parametrize("field", ["1000", "1000/mV", "1000/mv", "1000.0(0)/mV", "1000.0(0)/mv", "1e3(0)/mV", "1000.(0)/mV"])
def test_gain_field_spellings_parse(tmp_path, field):
    x = np.random.default_rng(3).normal(0, 0.4, size=(12, 600))
    hea, _ = write_challenge_record(tmp_path / "G1", x, 500)
    for row in range(12):
        _set_gain_field(hea, row, field)
    np.testing.assert_allclose(read_record(hea).signal, np.round(x * 1000) / 1000, rtol=0, atol=1e-12)


def test_gain_parser_on_synthetic_headers(tmp_path):
    path = tmp_path / "X.hea"
    text = "X 2 500 10\nX.mat 16+24 204.918(0)/mV 16 0 0 0 0 I\nX.mat 16+24 .5/uV 16 0 0 0 0 lead two\n# Dx: 1\n"
    assert challenge._parse_gains(text, 2, path) == [204.918, 0.5]
    for bad, why in (("0/mV", "not a positive"), ("0.0(0)/mV", "not a positive"), ("nan/mV", "not a number"),
                     ("/mV", "not a number")):
        with pytest.raises(RecordError, match=why) as info:
            challenge._parse_gains(text.replace("204.918(0)/mV", bad), 2, path)
        assert info.value.reason == "bad_units" and "X.hea" in str(info.value) and "lead I" in str(info.value)
    with pytest.raises(RecordError, match="no ADC gain field") as info:
        challenge._parse_gains(text.replace("X.mat 16+24 .5/uV 16 0 0 0 0 lead two", "X.mat 16"), 2, path)
    assert info.value.reason == "bad_units"


def test_eleven_lead_record_is_rejected(sample_dir, tmp_path):
    src = sorted((sample_dir / "ningbo").rglob("*.hea"))[0]
    x = read_record(src).signal
    hea, _ = write_challenge_record(tmp_path / "JS99999", x[:11], 500, leads=LEADS12[:11], dx=["426783006"])
    with pytest.raises(RecordError, match="11 leads instead of 12") as info:
        read_record(hea)
    assert info.value.reason == "wrong_leads" and "JS99999" in str(info.value)


def test_invalid_sample_marker_reads_as_nan_and_is_rejected(sample_dir, tmp_path):
    # int16 cannot hold NaN; WFDB's invalid-sample marker -32768 is what wfdb turns into NaN.
    hea = _copy(sorted((sample_dir / "georgia").rglob("*.hea"))[0], tmp_path)
    mat = hea.with_suffix(".mat")
    raw = _raw_int16(mat).copy()
    raw[4, 100] = -32768
    mat.write_bytes(mat.read_bytes()[:24] + np.ascontiguousarray(raw.T).astype("<i2").tobytes())
    # Keep the checksum of lead aVL consistent so only the NaN check can reject the record.
    lines = hea.read_text().splitlines()
    parts = lines[5].split()
    s = int(raw[4].astype(np.int64).sum() % 65536)
    parts[6] = str(s - 65536 if s >= 32768 else s)
    lines[5] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match="NaN") as info:
        read_record(hea)
    assert info.value.reason == "non_finite" and "aVL" in str(info.value)


def test_infinite_physical_values_are_rejected_monkeypatched(sample_dir, tmp_path, monkeypatch):
    # No WFDB format used by the Challenge can store inf; patch wfdb's conversion to inject one.
    hea = _copy(sorted((sample_dir / "ptb-xl").rglob("*.hea"))[0], tmp_path)
    real_dac = challenge.wfdb.Record.dac

    def dac_with_inf(self, *a, **k):
        p = real_dac(self, *a, **k)
        p[10, 3] = np.inf
        return p

    monkeypatch.setattr(challenge.wfdb.Record, "dac", dac_with_inf)
    with pytest.raises(RecordError) as info:
        read_record(hea)
    assert info.value.reason == "non_finite"


def test_resample_preserves_frequency_and_fit_length_pads():
    fs_in, f0 = 1000.0, 1.2  # a 1.2 Hz sine (72 bpm, 12 whole cycles) sampled at 1 kHz for 10 s
    t = np.arange(10_000) / fs_in
    y = resample_to(np.sin(2 * np.pi * f0 * t)[None], fs_in, 500.0)
    assert y.shape == (1, 5000)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert np.argmax(spectrum) * 500.0 / 5000 == pytest.approx(f0)
    np.testing.assert_allclose(y[0, 100:-100], np.sin(2 * np.pi * f0 * np.arange(5000) / 500.0)[100:-100], atol=1e-3)
    assert resample_to(np.zeros((12, 2570)), 257.0, 500.0).shape == (12, 5000)  # INCART-like rate, ratio 500/257
    short = np.ones((2, 3500))
    padded = fit_length(short, 5000)
    assert padded.shape == (2, 5000) and np.all(padded[:, :3500] == 1) and np.all(padded[:, 3500:] == 0)
    assert np.all(fit_length(short, 5000, "edge")[:, 3500:] == 1)
    assert fit_length(np.arange(6000.0)[None], 5000)[0, -1] == 4999.0  # crop keeps the first samples

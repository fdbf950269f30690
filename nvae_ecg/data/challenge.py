"""Reader for the PhysioNet/CinC Challenge 2021 training records (WFDB header + MATLAB v4 ``.mat``).

Each Challenge record is a pair ``NAME.hea`` / ``NAME.mat``: the header holds the
record line (name, number of signals, sampling rate, number of samples), one line
per lead (file, format ``16``, gain ``1000.0(0)/mV``, ..., checksum, lead name) and
comment lines ``# Age:``, ``# Sex:``, ``# Dx:`` (SNOMED CT codes). The ``.mat`` is a
MATLAB v4 int16 matrix (leads x samples) whose 24-byte preamble the header skips
with its byte offset. Signals are read with the ``wfdb`` package; this module adds
what wfdb does not check: wfdb silently falls back to 250 Hz when the sampling rate
is missing or unparseable, accepts a ``.mat`` with trailing garbage and never
compares the header checksums, so :func:`read_record` parses the record line
itself, checks the file size, the MAT v4 preamble and the checksums, the lead set
(the 12 standard leads; a record with all 12 leads in another order is reordered
to :data:`nvae_ecg.leads.LEADS12`), the units (``mV`` in any case -- PTB-XL headers
say ``mv``, which wfdb keeps verbatim and scales like ``mV`` -- or ``uV``/``V``,
rescaled to mV), the ADC gains (parsed from the header text like the sampling rate:
wfdb silently reads a gain of 0, or a missing one, as its default 200), non-finite
samples (wfdb reads the int16 marker -32768 as NaN) and the ``Dx`` line. Every problem
raises :class:`RecordError` with a reason key (see :data:`REASONS`) and a message
naming the file. :func:`resample_to` and
:func:`fit_length` bring a record to the fixed 500 Hz x 10 s grid without ever
stretching it in time. :func:`write_challenge_record` writes the same layout atomically
(``signal`` stored as ``round(x * gain)``; age/sex None written as ``NaN``/``Unknown``) with the
per-source header quirks as keywords: PTB-XL writes ``units="mv"``, Georgia has no ``# Sx:`` line
(``sx_line=False``); a wrong shape, NaN/inf or an int16 overflow raises ValueError naming the file.

Example::

    python -c "from nvae_ecg.data.challenge import read_record; r = read_record('../shared/data/challenge2021-sample/ptb-xl/g7/HR06002.hea'); print(r.fs, r.signal.shape, r.dx)"
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import wfdb
from scipy.signal import resample_poly

from nvae_ecg.leads import LEADS12

#: Reason keys used in records.csv, with a one-line explanation each.
REASONS: dict[str, str] = {
    "unreadable_header": "the .hea file cannot be parsed",
    "missing_signal_file": "the header names a signal file (.mat) that does not exist",
    "missing_header": "a .mat file without a .hea header",
    "unreadable_signal": "the signal file cannot be read (truncated, wrong size or wrong MAT preamble)",
    "checksum_mismatch": "the signal does not match the checksums in the header (corrupt file)",
    "wrong_leads": "the record does not have exactly the 12 standard leads",
    "bad_units": "a lead has units other than mV/uV/V or an invalid gain",
    "invalid_fs": "the sampling rate is missing, not a number or outside the plausible range",
    "non_finite": "the signal contains NaN or infinite samples",
    "missing_dx": "the header has no (or an empty) '# Dx:' line",
    "invalid_dx": "the '# Dx:' line holds something that is not a SNOMED CT code",
    "too_short": "the record is shorter than --min_seconds",
    "duplicate_record": "a record of the same name was already found in this dataset",
    "outlier": "the record leaves the per-lead percentile band (outlier filter)",
}

#: Plausible ECG sampling rates; anything outside is treated as a broken header.
FS_MIN = 50.0
FS_MAX = 20000.0

_UNIT_SCALE_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3}
_CANONICAL_LEAD = {name.lower(): name for name in LEADS12}
# MAT v4 type code MOPT = 0030: little-endian, int16 precision (P=3), full numeric matrix.
_MAT4_INT16_LE = 30


class RecordError(Exception):
    """A record that cannot be used; ``reason`` is a key of :data:`REASONS`, the message names the file."""

    def __init__(self, reason: str, path: str | os.PathLike, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.reason = reason
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


@dataclass
class ChallengeHeader:
    """Metadata of one record as parsed from its ``.hea`` file."""

    record: str
    header_path: str
    fs: float
    n_samples: int
    leads: list[str]
    age: float
    sex: str
    dx: list[str]
    comments: list[str] = field(default_factory=list)


@dataclass
class ChallengeRecord:
    """A record read in physical units: ``signal`` is (12, n_samples) float64 in mV, LEADS12 order."""

    header: ChallengeHeader
    signal: np.ndarray

    @property
    def fs(self) -> float:
        """Sampling rate in Hz."""
        return self.header.fs

    @property
    def dx(self) -> list[str]:
        """SNOMED CT codes of the record."""
        return self.header.dx


def parse_comments(comments: Sequence[str]) -> dict[str, str]:
    """Map ``Key: value`` header comments (``#`` already stripped or not) to a dict; tolerates ``# Dx:`` spacing."""
    out: dict[str, str] = {}
    for line in comments:
        text = line.strip().lstrip("#").strip()
        if ":" not in text:
            continue
        key, value = text.split(":", 1)
        key = key.strip()
        if key and key not in out:
            out[key] = value.strip()
    return out


def parse_age(value: str | None) -> float:
    """Age in years as float; NaN for missing, 'NaN', 'Unknown' or anything unparseable."""
    if value is None:
        return float("nan")
    try:
        age = float(value)
    except ValueError:
        return float("nan")
    return age if math.isfinite(age) and age >= 0 else float("nan")


def parse_sex(value: str | None) -> str:
    """Normalised sex: 'Male', 'Female' or 'Unknown'."""
    v = (value or "").strip().lower()
    if v in ("male", "m"):
        return "Male"
    if v in ("female", "f"):
        return "Female"
    return "Unknown"


def parse_dx(value: str | None, path: str | os.PathLike) -> list[str]:
    """SNOMED CT codes of a ``Dx`` value; raises RecordError when missing, empty or not numeric codes."""
    if value is None:
        raise RecordError("missing_dx", path, "header has no '# Dx:' line; every Challenge record lists its SNOMED CT codes there")
    codes = [c.strip() for c in value.split(",") if c.strip()]
    if not codes:
        raise RecordError("missing_dx", path, "the '# Dx:' line is empty")
    bad = [c for c in codes if not c.isdigit()]
    if bad:
        raise RecordError("invalid_dx", path, f"'# Dx:' holds {bad!r}, which are not SNOMED CT codes (digits only)")
    return codes


def _parse_record_line(text: str, path: Path) -> tuple[float, int | None]:
    """Sampling rate and sample count from the header's record line, parsed independently of wfdb."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        if len(tokens) < 3:
            raise RecordError(
                "invalid_fs", path,
                f"record line {stripped!r} has no sampling-rate field (wfdb would silently assume 250 Hz)",
            )
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:/.*)?", tokens[2])
        if m is None:
            raise RecordError("invalid_fs", path, f"sampling rate {tokens[2]!r} on the record line is not a number")
        fs = float(m.group(1))
        if not (FS_MIN <= fs <= FS_MAX):
            raise RecordError(
                "invalid_fs", path,
                f"sampling rate {tokens[2]} Hz is outside the plausible range [{FS_MIN:g}, {FS_MAX:g}] Hz",
            )
        n = None
        if len(tokens) >= 4:
            try:
                n = int(tokens[3])
            except ValueError as exc:
                raise RecordError("unreadable_header", path, f"sample count {tokens[3]!r} is not an integer") from exc
        return fs, n
    raise RecordError("unreadable_header", path, "header has no record line")


# Gain field of a signal line: gain, optional (baseline), optional /units; e.g. 1000, 1000/mV, 1000.0(0)/mv, 2e2(-5)/uV.
_GAIN_FIELD = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?:\([+-]?[0-9]+\))?(?:/\S*)?")


def _parse_gains(text: str, n_sig: int, path: Path) -> list[float]:
    """ADC gain of each signal line, parsed independently of wfdb (which reads 0 or a missing gain as 200)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    signal_lines = lines[1:1 + n_sig]  # the record line comes first; the signal lines follow in lead order
    if len(signal_lines) != n_sig:
        raise RecordError("unreadable_header", path, f"header has {len(signal_lines)} signal lines for {n_sig} signals")
    gains = []
    for k, line in enumerate(signal_lines, start=1):
        tokens = line.split()
        # The description (lead name) is the 9th field and may contain blanks.
        where = f"signal line {k}" + (f" (lead {' '.join(tokens[8:])})" if len(tokens) > 8 else "")
        if len(tokens) < 3:
            raise RecordError("bad_units", path, f"{where} has no ADC gain field; wfdb would silently assume its default 200")
        m = _GAIN_FIELD.fullmatch(tokens[2])
        if m is None:
            raise RecordError("bad_units", path, f"{where}: ADC gain field {tokens[2]!r} is not a number")
        gain = float(m.group(1))
        if not math.isfinite(gain) or gain <= 0:
            raise RecordError(
                "bad_units", path,
                f"{where}: ADC gain {tokens[2]!r} is not a positive number "
                "(wfdb would silently read a gain of 0 as its default 200, scaling the signal by an unknown factor)",
            )
        gains.append(gain)
    return gains


def _header_from_wfdb(hdr, fs: float, path: Path) -> ChallengeHeader:
    """Build a ChallengeHeader from a wfdb header/record object and the independently parsed sampling rate."""
    if hdr.sig_name is None or not hdr.n_sig:
        raise RecordError("unreadable_header", path, "header declares no signals")
    meta = parse_comments(hdr.comments or [])
    dx = parse_dx(meta.get("Dx"), path)
    return ChallengeHeader(
        record=hdr.record_name,
        header_path=str(path),
        fs=fs,
        n_samples=int(hdr.sig_len) if hdr.sig_len is not None else -1,
        leads=list(hdr.sig_name),
        age=parse_age(meta.get("Age")),
        sex=parse_sex(meta.get("Sex")),
        dx=dx,
        comments=list(hdr.comments or []),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError("unreadable_header", path, f"cannot read header as text ({exc})") from exc


def read_header(hea_path: str | os.PathLike) -> ChallengeHeader:
    """Parse a Challenge ``.hea`` (record line, lead names, Age/Sex/Dx); raises RecordError naming the file."""
    path = Path(hea_path)
    fs, _ = _parse_record_line(_read_text(path), path)
    try:
        hdr = wfdb.rdheader(str(path.with_suffix("")))
    except Exception as exc:  # wfdb raises many types on malformed headers
        raise RecordError("unreadable_header", path, f"wfdb cannot parse the header ({type(exc).__name__}: {exc})") from exc
    return _header_from_wfdb(hdr, fs, path)


def _lead_order(names: Sequence[str], path: Path) -> list[int]:
    """Column of each LEADS12 lead in the header order; raises unless the 12 standard leads are all there once."""
    canon = [_CANONICAL_LEAD.get(str(n).strip().lower()) for n in names]
    problems = []
    if len(names) != len(LEADS12):
        problems.append(f"{len(names)} leads instead of 12")
    unknown = [n for n, c in zip(names, canon) if c is None]
    if unknown:
        problems.append(f"unknown lead names {unknown}")
    dup = sorted({c for c in canon if c is not None and canon.count(c) > 1})
    if dup:
        problems.append(f"duplicated leads {dup}")
    missing = [n for n in LEADS12 if n not in canon]
    if missing:
        problems.append(f"missing leads {missing}")
    if problems:
        raise RecordError(
            "wrong_leads", path,
            "; ".join(problems) + f" (header leads: {list(names)}; expected the 12 standard leads {list(LEADS12)})",
        )
    return [canon.index(n) for n in LEADS12]


def _check_signal_file(hdr, sig_path: Path, hea_path: Path) -> None:
    """Size and MAT v4 preamble checks that wfdb skips (it accepts trailing garbage silently)."""
    fmts = set(hdr.fmt or [])
    offsets = set(hdr.byte_offset or [0])
    files = set(hdr.file_name or [])
    if fmts != {"16"} or len(files) != 1 or len(offsets) != 1:
        return  # only the Challenge layout (one int16 file) is checked byte-exactly
    offset = int(next(iter(offsets)) or 0)
    size = sig_path.stat().st_size
    expected = offset + 2 * hdr.n_sig * hdr.sig_len
    if size != expected:
        raise RecordError(
            "unreadable_signal", sig_path,
            f"file is {size} bytes but header {hea_path.name} implies {expected} "
            f"({hdr.n_sig} leads x {hdr.sig_len} samples x 2 bytes + {offset}); truncated or corrupt",
        )
    if sig_path.suffix.lower() == ".mat" and offset >= 20:
        with open(sig_path, "rb") as fh:
            mopt, mrows, ncols, imagf, namlen = struct.unpack("<5i", fh.read(20))
        if (mopt, mrows, ncols, imagf) != (_MAT4_INT16_LE, hdr.n_sig, hdr.sig_len, 0) or 20 + namlen != offset:
            raise RecordError(
                "unreadable_signal", sig_path,
                f"MAT v4 preamble (type {mopt}, {mrows}x{ncols}, imag {imagf}, name length {namlen}) does not match "
                f"an int16 {hdr.n_sig}x{hdr.sig_len} matrix at byte offset {offset} as header {hea_path.name} says",
            )


def _checksums(d_signal: np.ndarray) -> np.ndarray:
    """WFDB 16-bit checksums (signed sum of the digital samples modulo 2**16) per lead."""
    s = np.asarray(d_signal, dtype=np.int64).sum(axis=0) % 65536
    return np.where(s >= 32768, s - 65536, s)


def read_record(hea_path: str | os.PathLike) -> ChallengeRecord:
    """Read a Challenge record in mV (12, n) LEADS12 order with every check; raises RecordError naming the file."""
    path = Path(hea_path)
    text = _read_text(path)
    fs, _ = _parse_record_line(text, path)
    try:
        # One wfdb call parses the header and reads the digital samples (the header parse dominates the cost).
        rec = wfdb.rdrecord(str(path.with_suffix("")), physical=False)
    except Exception as exc:
        _explain_read_failure(path, exc)
    header = _header_from_wfdb(rec, fs, path)
    order = _lead_order(header.leads, path)
    gains = _parse_gains(text, rec.n_sig, path)
    scales = []
    for lead, unit, gain, wfdb_gain in zip(header.leads, rec.units or [None] * rec.n_sig, gains,
                                           rec.adc_gain or [None] * rec.n_sig):
        scale = _UNIT_SCALE_TO_MV.get(str(unit).strip().lower())
        if scale is None:
            raise RecordError("bad_units", path, f"lead {lead} has units {unit!r}; expected mV (or uV/V)")
        # The conversion below uses wfdb's gain; it must be the one the header states (no silent default).
        if wfdb_gain is None or float(wfdb_gain) != gain:
            raise RecordError("bad_units", path, f"lead {lead}: wfdb read ADC gain {wfdb_gain!r}, the header says {gain!r}")
        scales.append(scale)
    sig_path = path.parent / rec.file_name[0]
    _check_signal_file(rec, sig_path, path)
    d = rec.d_signal
    if d is None or d.ndim != 2 or d.shape[1] != rec.n_sig or d.shape[0] != rec.sig_len:
        shape = None if d is None else d.shape
        raise RecordError("unreadable_signal", sig_path, f"read shape {shape}, header says ({rec.sig_len}, {rec.n_sig})")
    if d.shape[0] == 0:
        raise RecordError("unreadable_signal", sig_path, "the signal has no samples")
    if rec.checksum is not None and all(c is not None for c in rec.checksum):
        got = _checksums(d)
        bad = [header.leads[i] for i in range(rec.n_sig) if got[i] != int(rec.checksum[i])]
        if bad:
            raise RecordError(
                "checksum_mismatch", sig_path,
                f"samples of leads {bad} do not match the checksums in {path.name}; the file is corrupt",
            )
    # wfdb's own digital-to-physical conversion: (d - baseline) / gain, invalid-sample marker -> NaN.
    p = rec.dac(expanded=False, return_res=64, inplace=False)
    signal = (np.asarray(p, dtype=np.float64) * np.asarray(scales)[None, :]).T[order]
    if not np.all(np.isfinite(signal)):
        n_bad = int(np.size(signal) - np.count_nonzero(np.isfinite(signal)))
        leads_bad = [LEADS12[i] for i in range(12) if not np.all(np.isfinite(signal[i]))]
        raise RecordError(
            "non_finite", sig_path,
            f"{n_bad} NaN/infinite samples (WFDB invalid-sample marker) in leads {leads_bad}",
        )
    return ChallengeRecord(header=header, signal=np.ascontiguousarray(signal))


def _explain_read_failure(path: Path, exc: Exception):
    """Turn a wfdb read failure into the RecordError that names its cause (header, missing file or signal)."""
    try:
        hdr = wfdb.rdheader(str(path.with_suffix("")))
    except Exception as hexc:
        raise RecordError(
            "unreadable_header", path, f"wfdb cannot parse the header ({type(hexc).__name__}: {hexc})"
        ) from hexc
    for name in sorted(set(hdr.file_name or [])):
        sig_path = path.parent / name
        if not sig_path.is_file():
            raise RecordError(
                "missing_signal_file", path,
                f"header names signal file {name!r}, which does not exist next to it ({sig_path})",
            ) from exc
    sig_path = path.parent / (hdr.file_name or [path.with_suffix(".mat").name])[0]
    _check_signal_file(hdr, sig_path, path)  # a size/preamble mismatch explains the failure better than wfdb
    raise RecordError(
        "unreadable_signal", sig_path, f"wfdb cannot read the signal ({type(exc).__name__}: {exc})"
    ) from exc


def resample_to(signal: np.ndarray, fs: float, target_fs: float, axis: int = -1) -> np.ndarray:
    """Polyphase resampling by the exact rational ratio target_fs/fs (no time stretching); identity if equal."""
    ratio = Fraction(target_fs).limit_denominator(10000) / Fraction(fs).limit_denominator(10000)
    if ratio == 1:
        return np.asarray(signal)
    # 'line' padding removes the end-to-end trend first, so the ECG's DC offset does not ring at the edges.
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=axis, padtype="line")


def fit_length(signal: np.ndarray, n: int, pad_mode: str = "zero") -> np.ndarray:
    """Keep the first ``n`` samples (last axis) or pad short signals at the end: zeros or the edge value."""
    length = signal.shape[-1]
    if length >= n:
        return signal[..., :n]
    width = [(0, 0)] * (signal.ndim - 1) + [(0, n - length)]
    if pad_mode == "zero":
        return np.pad(signal, width, mode="constant")
    if pad_mode == "edge":
        return np.pad(signal, width, mode="edge")
    raise ValueError(f"pad_mode must be 'zero' or 'edge', got {pad_mode!r}")


def _format_header_value(value, unknown: str) -> str:
    """A header comment value as the Challenge writes it: ``unknown`` for None (and NaN), else ``str(value)``."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return unknown
    return str(value)


def write_challenge_record(
    stem: str | os.PathLike,
    signal_mv: np.ndarray,
    fs: float,
    *,
    age: float | str | None = None,
    sex: str | None = None,
    dx: Sequence[str] = ("426783006",),
    leads: Sequence[str] = LEADS12,
    gain: float = 1000.0,
    units: str = "mV",
    sx_line: bool = True,
) -> tuple[Path, Path]:
    """Atomically write ``stem.hea`` + ``stem.mat`` (Challenge 2021 layout, int16 MAT v4); returns both paths."""
    stem = Path(stem)
    name = stem.name
    hea_path, mat_path = stem.with_name(name + ".hea"), stem.with_name(name + ".mat")
    x = np.asarray(signal_mv, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(leads) or x.shape[1] < 1:
        raise ValueError(f"{hea_path}: signal must be ({len(leads)}, n_samples) in {units}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{hea_path}: signal contains NaN/inf samples; int16 cannot store them")
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"{hea_path}: gain must be a positive number, got {gain!r}")
    digital = np.round(x * gain)
    if np.abs(digital).max() > 32767:
        # -32768 stays free: WFDB reads it as the invalid-sample marker.
        raise ValueError(
            f"{hea_path}: signal exceeds +-{32767 / gain:g} {units}, the int16 range at gain {gain:g}/{units}"
        )
    d = digital.astype("<i2")  # (leads, samples)
    preamble = struct.pack("<5i", _MAT4_INT16_LE, d.shape[0], d.shape[1], 0, 4) + b"val\x00"
    checks = _checksums(d.T)
    # repr keeps the gain exact in the header (e.g. 1000/4.88), so readers rescale by what was digitised.
    fmt = f"16x1+{len(preamble)} {float(gain)!r}(0)/{units} 16 0"
    lines = [f"{name} {d.shape[0]} {fs:g} {d.shape[1]}"]
    lines += [f"{name}.mat {fmt} {int(d[i, 0])} {int(checks[i])} 0 {lead}" for i, lead in enumerate(leads)]
    lines += [
        f"# Age: {_format_header_value(age, 'NaN')}",
        f"# Sex: {_format_header_value(sex, 'Unknown')}",
        f"# Dx: {','.join(str(c) for c in dx)}",
        "# Rx: Unknown",
        "# Hx: Unknown",
    ] + (["# Sx: Unknown"] if sx_line else [])
    stem.parent.mkdir(parents=True, exist_ok=True)
    # MAT v4 stores column-major, i.e. sample by sample with the leads interleaved, as WFDB format 16 reads it.
    files = {mat_path: preamble + np.ascontiguousarray(d.T).tobytes(), hea_path: ("\n".join(lines) + "\n").encode()}
    for path, data in files.items():  # the .mat first, so a header never names a half-written signal
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return hea_path, mat_path

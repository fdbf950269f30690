"""Synthetic 12-lead ECG demo data in the exact PhysioNet/CinC Challenge 2021 layout (no download needed).

Every record is a 3-D heart dipole (a sum of Gaussian P, Q, R, S, T waves per beat, in the spirit of
ECGSYN, McSharry et al. 2003, and its vectorcardiographic extension, Sameni et al. 2007) driven by a
beat-to-beat RR process and projected onto lead vectors (I and III in the frontal plane, V1..V6 in the
horizontal plane). Only the 8 independent leads are simulated and noised; II, aVR, aVL and aVF follow from
Einthoven/Goldberger (``nvae_ecg.leads``), so the identities hold up to int16 rounding. The 9 paper
classes change the physiology (rate, RR irregularity, f-waves, PR, QRS axis, voltage, T polarity,
pathological Q / ST changes), and the header's age and sex scale QRS and T voltage and shift QTc and PR
(``_apply_demographics``); a few non-paper SNOMED codes (RBBB, LBBB, PAC) appear for readers to ignore.
Files mimic each source: ``OUT/ptb-xl/gN/HR00001.{hea,mat}`` (``mv`` in lower case, 1 uV resolution),
``OUT/georgia/gN/E00001.*`` (no ``# Sx`` line, 4.88 uV steps, 60 Hz mains, ~10 % of records 5-9 s),
``OUT/ningbo/gN/JS00001.*`` (no AF, 4.88 uV steps). Output is byte-identical for a seed whatever ``--num_workers``.

Example::

    python -m nvae_ecg.data.synthetic demo/raw --n_ptbxl 600 --n_georgia 300 --n_ningbo 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from nvae_ecg.classes import CLASS_ABBREVS, PAPER_CLASSES, class_index
from nvae_ecg.data.challenge import write_challenge_record
from nvae_ecg.leads import eight_to_twelve, twelve_to_eight

FS = 500
RHYTHMS = ("SR", "SB", "STach", "AF")
#: Non-paper SNOMED CT codes the generator may add (with their morphology) so readers must ignore codes.
EXTRA_CODES = {"RBBB": "59118001", "LBBB": "164909002", "PAC": "284470004"}
_EXTRA_BY_KEY = {**{k.lower(): k for k in EXTRA_CODES}, **{v: k for k, v in EXTRA_CODES.items()}}
_QRS_ONSET = -0.045  # s relative to the R peak; PR and QT are measured from here


@dataclass(frozen=True)
class SourceSpec:
    """How one Challenge source looks: names, label mix and file quirks."""

    prefix: str
    rhythm: dict          # rhythm -> probability (exactly one rhythm per record)
    extra: dict           # non-rhythm paper class -> independent probability
    lowercase_units: bool  # PTB-XL headers write 'mv'
    sx_line: bool          # Georgia headers have no '# Sx:' line
    adc_uv: float          # ADC resolution of the independent leads in uV
    mains_hz: float
    short_frac: float      # fraction of records shorter than 10 s
    age: tuple             # mean, sd, min


SOURCES = {
    "ptb-xl": SourceSpec("HR", {"SR": 0.82, "SB": 0.05, "STach": 0.05, "AF": 0.08},
                         {"MI": 0.22, "LAD": 0.18, "LVH": 0.09, "TAb": 0.10, "IAVB": 0.04},
                         True, True, 1.0, 50.0, 0.0, (60, 17, 18)),
    "georgia": SourceSpec("E", {"SR": 0.40, "SB": 0.26, "STach": 0.20, "AF": 0.14},
                          {"MI": 0.01, "LAD": 0.10, "LVH": 0.13, "TAb": 0.22, "IAVB": 0.08},
                          False, False, 4.88, 60.0, 0.10, (62, 15, 18)),
    "ningbo": SourceSpec("JS", {"SR": 0.40, "SB": 0.42, "STach": 0.18},
                         {"MI": 0.01, "LAD": 0.05, "LVH": 0.05, "TAb": 0.12, "IAVB": 0.03},
                         False, True, 4.88, 50.0, 0.0, (57, 18, 5)),
}


@dataclass
class SimulatedEcg:
    """A simulated record: ``signal`` (12, n) float64 mV in LEADS12 order plus the physiology used.

    ``heart_rate_bpm`` is 60 / mean RR of the beats inside the record, ``pr_ms`` the PR interval (NaN for
    AF), ``qrs_axis_deg`` the frontal axis of the net QRS area (what I and aVF measure without noise),
    ``r_peaks_s`` the R-peak times in seconds.
    """

    signal: np.ndarray
    heart_rate_bpm: float
    pr_ms: float
    qrs_axis_deg: float
    r_peaks_s: np.ndarray


def _unit(x, y, z) -> np.ndarray:
    v = np.array([x, y, z], dtype=np.float64)
    return v / np.linalg.norm(v)


def _frontal(deg: float, z: float) -> np.ndarray:
    """Unit dipole direction with frontal angle ``deg`` (0 = left, +90 = inferior) and anterior part ``z``."""
    a = np.deg2rad(deg)
    return _unit(np.cos(a), np.sin(a), z)


def _lead_matrix(rng: np.random.Generator) -> np.ndarray:
    """(8, 3) lead vectors for I, III, V1..V6 (x left, y inferior, z anterior), precordials jittered per record."""
    m = np.zeros((8, 3))
    m[0] = (1.0, 0.0, 0.0)                      # I at 0 degrees (Einthoven triangle)
    m[1] = (-0.5, np.sqrt(3.0) / 2.0, 0.0)      # III at +120 degrees
    # Horizontal-plane directions roughly like Dower/Frank image surfaces; chest leads sit closer to the heart.
    ang = np.deg2rad(np.array([115.0, 95.0, 75.0, 55.0, 30.0, 5.0]) + rng.normal(0.0, 5.0, 6))
    mag = np.array([1.6, 2.3, 2.3, 2.0, 1.6, 1.3]) * rng.uniform(0.85, 1.15, 6)
    tilt = rng.uniform(-0.05, 0.25)
    m[2:] = mag[:, None] * np.stack([np.cos(ang), np.full(6, tilt), np.sin(ang)], axis=1)
    return m


def _normalise_labels(labels: Sequence[str]) -> set:
    labs = {CLASS_ABBREVS[class_index(s)] for s in labels}
    rhythms = labs & set(RHYTHMS)
    if len(rhythms) > 1:
        raise ValueError(f"labels {sorted(labs)} name more than one rhythm; pick one of {RHYTHMS}")
    if not rhythms:
        labs.add("SR")  # a record without a rhythm label is simulated in sinus rhythm
    if "AF" in labs and "IAVB" in labs:
        raise ValueError("IAVB needs P waves and cannot be combined with AF")
    return labs


def _beat_times(rhythm, hr, duration_s, f_resp, pac, rng):
    """R-peak times (s) from before 0 to after the end, and the index of a premature beat (-1 if none)."""
    rr0 = 60.0 / hr
    rsa, phase = rng.uniform(0.01, 0.05), rng.uniform(0, 2 * np.pi)
    af_sd = rng.uniform(0.15, 0.3)
    times = [-rng.uniform(0.0, rr0) - rr0]
    while times[-1] < duration_s + 0.6:
        t = times[-1]
        if rhythm == "AF":  # irregularly irregular ventricular response
            rr = rr0 * np.exp(rng.normal(0.0, af_sd) - af_sd ** 2 / 2)
        else:  # respiratory sinus arrhythmia plus a little jitter
            rr = rr0 * (1 + rsa * np.sin(2 * np.pi * f_resp * t + phase) + rng.normal(0.0, 0.008))
        times.append(t + max(rr, 0.28))
    times = np.array(times)
    j = -1
    inside = np.flatnonzero((times > 1.0) & (times < duration_s - 1.5))
    if pac and len(inside) > 0:
        j = int(rng.choice(inside))
        times[j] = times[j - 1] + rng.uniform(0.6, 0.75) * (times[j] - times[j - 1])
        times[j + 1:] += times[j] + rng.uniform(1.05, 1.2) * rr0 - times[j + 1]  # sinus node reset
    return times, j


def _template(labs, extras, rng):
    """Per-record wave set: QRS waves (centre, sl, sr, vector) fixed to the R peak, plus P/T/ST parameters."""
    lad, lvh = "LAD" in labs, "LVH" in labs
    amp = rng.uniform(0.7, 1.3)
    w = rng.uniform(0.009, 0.013) * (1.15 if lvh else 1.0)
    phi = rng.uniform(-80, -45) if lad else float(np.clip(rng.normal(30 if lvh else 50, 20), -15, 95))
    # Main LV forces point left and posterior; in LVH more posterior and larger (tall R V5/V6, deep S V1/V2).
    zpost = np.cos(np.deg2rad(phi)) * np.tan(np.deg2rad(rng.uniform(-45, -20) if lvh else rng.uniform(-45, -15)))
    a_r = amp * rng.uniform(0.6, 1.2) * (rng.uniform(1.8, 2.5) if lvh else 1.0)
    septal = _unit(-0.3, 0.9, 0.3) if lad else _unit(-0.7, 0.25, 0.7)  # LAFB: initial forces inferior-right
    qrs = [
        [-0.022, 0.008, 0.008, amp * rng.uniform(0.08, 0.25) * septal],
        [-0.008, w, w, a_r * rng.uniform(0.3, 0.6) * _frontal(phi + 10, 0.7)],
        [0.004, w, w, a_r * _frontal(phi, zpost)],
        [0.028, 0.010, 0.010, amp * rng.uniform(0.15, 0.45) * (1.5 if lvh else 1.0) * _unit(-0.4, -0.6, -0.7)],
    ]
    t_vec = amp * rng.uniform(0.2, 0.45) * _frontal(np.clip(rng.normal(40, 15), -10, 80), rng.uniform(0.1, 0.6))
    st_vec = np.zeros(3)
    if "TAb" in labs:
        t_vec = t_vec * (rng.uniform(-1.1, -0.4) if rng.random() < 0.65 else rng.uniform(-0.12, 0.12))
    if "MI" in labs:
        u = [_unit(0, 1, 0), _unit(-0.1, 0, 1), _unit(1, -0.3, 0.2)][rng.choice(3, p=[0.5, 0.35, 0.15])]
        for wave in qrs[:3]:  # necrosis removes the forces towards the territory ...
            wave[3] = wave[3] - rng.uniform(0.5, 0.9) * max(wave[3] @ u, 0.0) * u
        qrs.append([-0.018, 0.014, 0.014, -rng.uniform(0.25, 0.6) * amp * u])  # ... leaving a wide, deep Q
        if rng.random() < 0.35:  # acute: ST elevation over the territory (reciprocal depression elsewhere)
            st_vec = rng.uniform(0.1, 0.3) * u
        else:  # old: T inverted over the territory
            t_vec = t_vec - (1 + rng.uniform(0.3, 1.0)) * max(t_vec @ u, 0.0) * u - rng.uniform(0.1, 0.25) * u
    if "RBBB" in extras:  # terminal rightward-anterior forces: rsR' in V1, wide S in I and V6
        qrs[3][2] = 0.016
        qrs.append([0.065, 0.016, 0.016, amp * rng.uniform(0.4, 0.9) * _unit(-0.55, 0.1, 0.85)])
    if "LBBB" in extras:  # no septal q, slow left-posterior activation, discordant T
        qrs = [[-0.03, 0.02, 0.02, 0.8 * a_r * _frontal(phi, -0.2)],
               [0.03, 0.022, 0.022, 1.2 * a_r * _frontal(phi, -0.6)]]
        t_vec = -0.7 * t_vec
    p_vec = amp * rng.uniform(0.08, 0.2) * _frontal(rng.normal(55, 12), rng.uniform(-0.2, 0.3))
    pr = rng.uniform(0.22, 0.32) if "IAVB" in labs else rng.uniform(0.12, 0.19)
    return dict(qrs=qrs, t_vec=t_vec, st_vec=st_vec, p_vec=p_vec, p_sd=rng.uniform(0.018, 0.024), pr=pr,
                qtc=rng.uniform(0.38, 0.44), t_sd=rng.uniform(0.03, 0.04))


def _qrs_axis(qrs) -> float:
    net = sum(np.sqrt(np.pi / 2) * (sl + sr) * vec for _, sl, sr, vec in qrs)  # area of each Gaussian
    return float(np.degrees(np.arctan2(net[1], net[0])))


def _add_wave(d, centre, sl, sr, vec, fs):
    n = d.shape[1]
    lo, hi = max(0, int((centre - 5 * sl) * fs)), min(n, int((centre + 5 * sr) * fs) + 2)
    if hi <= lo:
        return
    tt = np.arange(lo, hi) / fs - centre
    d[:, lo:hi] += vec[:, None] * np.exp(-0.5 * (tt / np.where(tt < 0, sl, sr)) ** 2)


@lru_cache(maxsize=8)
def _emg_sos(fs: float):
    return sps.butter(2, [20.0, min(150.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")


def _noise(n, fs, f_resp, mains_hz, rng):
    """(8, n) noise for the independent leads: baseline wander, mains hum and muscle (EMG) noise."""
    t = np.arange(n) / fs
    wander = np.exp(rng.uniform(np.log(0.01), np.log(0.3)))
    f = np.concatenate([rng.uniform(0.05, 0.5, (8, 3)), np.full((8, 1), f_resp)], axis=1)
    a = wander * rng.uniform(0.1, 1.0, (8, 4)) / 2
    ph = rng.uniform(0, 2 * np.pi, (8, 4))
    x = np.einsum("lk,lkn->ln", a, np.sin(2 * np.pi * f[:, :, None] * t + ph[:, :, None]))
    x += rng.uniform(-0.05, 0.05, (8, 1))
    if rng.random() < 0.4:
        x += np.exp(rng.uniform(np.log(0.002), np.log(0.03))) * rng.uniform(0.3, 1, (8, 1)) * np.sin(
            2 * np.pi * mains_hz * t + rng.uniform(0, 2 * np.pi, (8, 1)))
    emg = sps.sosfilt(_emg_sos(float(fs)), rng.standard_normal((8, n)), axis=1)
    env = np.ones(n)
    if rng.random() < 0.3:  # a burst of muscle activity
        c, s = rng.uniform(0, t[-1] + 1 / fs), rng.uniform(0.3, 1.5)
        env += rng.uniform(1, 4) * np.exp(-0.5 * ((t - c) / s) ** 2)
    return x + np.exp(rng.uniform(np.log(0.003), np.log(0.03))) * emg / emg.std() * env


def _apply_demographics(tpl: dict, age: float | None, sex: str | None, scale: float = 1.0) -> None:
    """Age and sex trends of the adult ECG, so demographic conditioning has something to learn.

    Directions and rough sizes (``scale`` 1) after Rijnbeek et al. 2014 (J Electrocardiol 47:914) and Macfarlane
    2018: QRS and T voltage fall with age and are higher in men; QTc is ~15 ms longer in women and lengthens with
    age; PR lengthens with age. ``scale`` multiplies every slope (0: no effect). At scale 1 the other
    record-to-record variation of the demo data hides most of it (hand-made amplitude features reach sex AUROC
    0.58 and age r 0.27), which is realistic for one lead's voltage but leaves too little for a demo to tell a
    generator that keeps the demographics from one that ignores them; docs/data.md says which scale the
    demographic-fidelity measurement used. No draw from the RNG, so a record's other features do not depend on
    its demographics.
    """
    years = 0.0 if age is None or not np.isfinite(age) else float(age) - 50.0
    male = {"male": 1.0, "m": 1.0, "female": -1.0, "f": -1.0}.get(str(sex).strip().lower(), 0.0)
    k = float(scale)
    lo, hi = max(0.2, 1.0 - 0.4 * k), 1.0 + 0.4 * k  # 0.6..1.4 at scale 1
    qrs_gain = float(np.clip((1.0 - 0.006 * k * years) * (1.0 + 0.08 * k * male), lo, hi))
    t_gain = float(np.clip((1.0 - 0.004 * k * years) * (1.0 + 0.06 * k * male), lo, hi))
    for wave in tpl["qrs"]:
        wave[3] = qrs_gain * wave[3]
    tpl["t_vec"] = t_gain * tpl["t_vec"]
    tpl["qtc"] = tpl["qtc"] + k * 0.0003 * years - k * 0.0075 * male  # same rounding as k = 1 before
    tpl["pr"] = tpl["pr"] + k * 0.0004 * years


def simulate_ecg(labels: Sequence[str], fs: float = FS, duration_s: float = 10.0,
                 rng: np.random.Generator | None = None, extra_codes: Sequence[str] = (), noise: bool = True,
                 mains_hz: float = 50.0, age: float | None = None, sex: str | None = None,
                 demographic_scale: float = 1.0) -> SimulatedEcg:
    """Simulate a 12-lead ECG (mV) with the physiology of the given classes (and age/sex); returns a SimulatedEcg."""
    rng = np.random.default_rng() if rng is None else rng
    labs = _normalise_labels(labels)
    extras = set()
    for c in extra_codes:
        if str(c).strip().lower() not in _EXTRA_BY_KEY:
            raise ValueError(f"unknown extra code {c!r}; known: {EXTRA_CODES}")
        extras.add(_EXTRA_BY_KEY[str(c).strip().lower()])
    if {"RBBB", "LBBB"} <= extras:
        raise ValueError("RBBB and LBBB are mutually exclusive")
    rhythm = (labs & set(RHYTHMS)).pop()
    n = int(round(duration_s * fs))
    if n < fs:
        raise ValueError(f"duration_s={duration_s} is too short; simulate at least 1 s")
    hr = {"SR": (62, 98), "SB": (40, 57), "STach": (104, 150), "AF": (60, 140)}[rhythm]
    f_resp = rng.uniform(0.15, 0.35)
    times, pac = _beat_times(rhythm, rng.uniform(*hr), n / fs, f_resp, "PAC" in extras and rhythm != "AF", rng)
    for _ in range(100):  # redraw until the axis agrees with the LAD label (inferior MI can shift it left)
        tpl = _template(labs, extras, rng)
        axis = _qrs_axis(tpl["qrs"])
        if (axis < -40) if "LAD" in labs else (-25 < axis < 100):
            break
    else:
        raise RuntimeError(f"could not draw a QRS axis consistent with labels {sorted(labs)}")
    _apply_demographics(tpl, age, sex, demographic_scale)
    d = np.zeros((3, n))
    resp_ph = rng.uniform(0, 2 * np.pi)
    for k, tr in enumerate(times):
        rr = float(np.clip(tr - times[k - 1] if k else times[1] - times[0], 0.3, 1.6))
        m = 1 + 0.05 * np.sin(2 * np.pi * f_resp * tr + resp_ph) + rng.normal(0, 0.015)
        for c, sl, sr, vec in tpl["qrs"]:
            _add_wave(d, tr + c, sl, sr, m * vec, fs)
        t_sd = tpl["t_sd"] * np.sqrt(rr)
        t_peak = tr + _QRS_ONSET + tpl["qtc"] * np.sqrt(rr) - 2.5 * t_sd  # Bazett QT ends the T wave
        _add_wave(d, t_peak, 1.6 * t_sd, t_sd, (1 + rng.normal(0, 0.02)) * tpl["t_vec"], fs)
        if tpl["st_vec"].any():
            lo, hi = max(0, int((tr + 0.02) * fs)), min(n, int((t_peak + 6 * t_sd) * fs))
            if hi > lo:  # ST plateau from the J point that merges into the T wave
                tt = np.arange(lo, hi) / fs
                box = 1 / (1 + np.exp(-(tt - tr - 0.04) / 0.006)) / (1 + np.exp((tt - t_peak - t_sd) / (0.6 * t_sd)))
                d[:, lo:hi] += tpl["st_vec"][:, None] * box
        if rhythm != "AF":
            pr = 0.12 if k == pac else tpl["pr"]
            p_vec = np.linalg.norm(tpl["p_vec"]) * _frontal(-70, 0.0) if k == pac else tpl["p_vec"]
            _add_wave(d, tr + _QRS_ONSET - pr + 2.5 * tpl["p_sd"], tpl["p_sd"], tpl["p_sd"], p_vec, fs)
    if rhythm == "AF":  # fibrillatory f-waves, strongest in V1, with slow frequency and amplitude drift
        t = np.arange(n) / fs
        drift = np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
        phase = 2 * np.pi * np.cumsum(rng.uniform(4.0, 8.0) * (1 + 0.08 * drift)) / fs
        f_wave = rng.uniform(0.02, 0.08) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t)) * (
            np.sin(phase) + 0.35 * np.sin(2 * phase + rng.uniform(0, 6.3)))
        d += _unit(-0.35, 0.4, 0.85)[:, None] * f_wave
    x8 = _lead_matrix(rng) @ d
    if noise:
        x8 = x8 + _noise(n, fs, f_resp, mains_hz, rng)
    inside = times[(times >= 0) & (times < n / fs)]
    rate = 60.0 / np.mean(np.diff(inside)) if len(inside) > 1 else float(60.0 / np.mean(np.diff(times)))
    return SimulatedEcg(eight_to_twelve(x8), float(rate), float("nan") if rhythm == "AF" else 1000 * tpl["pr"],
                        axis, inside)


def _quantise(x12: np.ndarray, step_uv: float) -> np.ndarray:
    """Put the independent leads on the source's ADC grid (integer uV) and rebuild the derived leads."""
    x8 = np.round(np.round(twelve_to_eight(x12) * 1000.0 / step_uv) * step_uv)
    return eight_to_twelve(x8) / 1000.0


def _plan(source: str, n: int, seed: int) -> list:
    """Labels, extra codes and duration of every record of a source: every class it has appears, then a random mix."""
    spec = SOURCES[source]
    rng = np.random.default_rng([seed, list(SOURCES).index(source), 0])
    rhythms = [r for r in RHYTHMS if spec.rhythm.get(r, 0) > 0]
    p = np.array([spec.rhythm[r] for r in rhythms]) / sum(spec.rhythm[r] for r in rhythms)
    guaranteed = [(r,) for r in rhythms] + [("SR", c) for c, q in spec.extra.items() if q > 0]
    labels = guaranteed * max(1, min(3, n // 20))
    while len(labels) < n:
        r = rhythms[rng.choice(len(rhythms), p=p)]
        extra = (c for c, q in spec.extra.items() if rng.random() < q and not (c == "IAVB" and r == "AF"))
        labels.append((r,) + tuple(extra))
    labels = [labels[i] for i in rng.permutation(len(labels))][:n]
    short = set(rng.choice(n, int(round(spec.short_frac * n)), replace=False).tolist()) if n else set()
    plan = []
    for i, labs in enumerate(labels):
        extras = []
        if rng.random() < 0.06:
            extras.append("RBBB")
        elif rng.random() < 0.03 and not {"MI", "LVH"} & set(labs):
            extras.append("LBBB")
        if rng.random() < 0.06 and "AF" not in labs:
            extras.append("PAC")
        plan.append((labs, tuple(extras), float(rng.integers(5, 10)) if i in short else 10.0))
    return plan


def _make_record(job) -> dict:
    """Simulate and write one record (worker entry point); seeded from (seed, source, index) only."""
    root, source, index, labs, extras, duration_s, seed, demographic_scale = job
    spec = SOURCES[source]
    rng = np.random.default_rng([seed, list(SOURCES).index(source), 1, index])
    age_mean, age_sd, age_min = spec.age
    older = 8 if {"AF", "MI", "LVH"} & set(labs) else 0
    age = int(np.clip(round(rng.normal(age_mean + older, age_sd)), age_min, 95))
    sex = "Male" if rng.random() < 0.5 else "Female"
    sim = simulate_ecg(labs, FS, duration_s, rng, extras, mains_hz=spec.mains_hz, age=age, sex=sex,
                       demographic_scale=demographic_scale)
    x = np.clip(_quantise(sim.signal, spec.adc_uv), -32.0, 32.0)
    codes = [PAPER_CLASSES[class_index(c)].snomed for c in labs] + [EXTRA_CODES[e] for e in extras]
    codes = [codes[i] for i in rng.permutation(len(codes))]  # real headers list codes in no fixed order
    name = f"{spec.prefix}{index:05d}"
    write_challenge_record(Path(root) / source / f"g{(index - 1) // 1000 + 1}" / name, x, FS, age=age, sex=sex,
                           dx=codes, units="mv" if spec.lowercase_units else "mV", sx_line=spec.sx_line)
    return {"source": source, "record": name, "labels": list(labs), "extras": list(extras), "n_samples": x.shape[1]}


def make_dataset(out_dir, n_ptbxl: int = 600, n_georgia: int = 300, n_ningbo: int = 300, seed: int = 0,
                 workers: int | None = None, overwrite: bool = False, demographic_scale: float = 1.0) -> dict:
    """Write the synthetic Challenge-layout dataset under ``out_dir`` and return a summary dict."""
    t0 = time.time()
    out = Path(out_dir)
    counts = {"ptb-xl": n_ptbxl, "georgia": n_georgia, "ningbo": n_ningbo}
    if not (np.isfinite(demographic_scale) and 0 <= demographic_scale <= 5):
        raise ValueError(f"demographic_scale must be in [0, 5], got {demographic_scale}")
    for source, n in counts.items():
        if n < 0 or n > 99999:
            raise ValueError(f"number of {source} records must be in 0..99999, got {n}")
        if n and (out / source).exists() and not overwrite:
            raise FileExistsError(f"{out / source} already exists; pass --overwrite to replace it "
                                  "or choose another OUT_DIR")
    tmp = out / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    jobs = [(str(tmp), s, i + 1, *rec, seed, demographic_scale)
            for s, n in counts.items() for i, rec in enumerate(_plan(s, n, seed))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    try:
        bar = dict(total=len(jobs), desc="synthetic ECGs", unit="rec", disable=None)
        if workers == 1:
            meta = [_make_record(j) for j in tqdm(jobs, **bar)]
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ctx.Pool(workers) as pool:
                meta = list(tqdm(pool.imap(_make_record, jobs, chunksize=8), **bar))
        summary = {"seed": seed, "fs": FS, "demographic_scale": demographic_scale, "sources": {}}
        for source, n in counts.items():
            rows = [m for m in meta if m["source"] == source]
            if not n:
                continue
            summary["sources"][source] = {
                "n_records": n,
                "class_counts": {c: sum(c in m["labels"] for m in rows) for c in CLASS_ABBREVS},
                "extra_code_counts": {e: sum(e in m["extras"] for m in rows) for e in EXTRA_CODES},
                "n_shorter_than_10s": sum(m["n_samples"] < 10 * FS for m in rows),
            }
            dest = out / source
            if dest.exists():
                os.replace(dest, tmp / f"old-{source}")
            os.replace(tmp / source, dest)
        side = out / f"synthetic.json.tmp-{os.getpid()}"
        side.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(side, out / "synthetic.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags of the synthetic data generator."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out_dir", help="folder that receives ptb-xl/, georgia/, ningbo/ and synthetic.json")
    p.add_argument("--n_ptbxl", type=int, default=600, help="number of PTB-XL-like records (HR*)")
    p.add_argument("--n_georgia", type=int, default=300, help="number of Georgia-like records (E*)")
    p.add_argument("--n_ningbo", type=int, default=300, help="number of Ningbo-like records (JS*), no AF")
    p.add_argument("--seed", type=int, default=0, help="master seed; same seed gives byte-identical files")
    p.add_argument("--num_workers", "--workers", dest="num_workers", type=int, default=os.cpu_count(),
                   help="worker processes (the output does not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace source folders that already exist in out_dir")
    p.add_argument("--demographic_scale", type=float, default=1.0,
                   help="multiplies the age/sex trends of QRS/T voltage, QTc and PR (0: none; 1: published sizes)")
    args = p.parse_args(argv)
    if not 0 <= args.demographic_scale <= 5:  # also refuses NaN
        p.error(f"--demographic_scale must be in [0, 5], got {args.demographic_scale}")
    return args


def main(args: argparse.Namespace) -> dict:
    """Generate the dataset described by ``args`` and print its summary."""
    summary = make_dataset(args.out_dir, args.n_ptbxl, args.n_georgia, args.n_ningbo, args.seed, args.num_workers,
                           args.overwrite, args.demographic_scale)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(parse_args())

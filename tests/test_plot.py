"""The clinical 12-lead layout: the grid is square on paper (0.2 s x 0.5 mV per large square)."""

import numpy as np
import pytest

from nvae_ecg.plot import plot_compare, plot_ecg12


def test_large_square_is_square_on_the_page():
    fig = plot_ecg12(np.zeros((12, 5000)), title="t")
    ax = fig.axes[0]
    fig.canvas.draw()
    p0, p1 = ax.transData.transform([(0.0, 0.0), (0.2, 0.5)])
    dx, dy = p1 - p0
    assert dx == pytest.approx(dy, rel=1e-3)
    # 25 mm/s on the page: 0.2 s is 5 mm
    mm = 5.0 / 25.4 * fig.dpi
    assert dx == pytest.approx(mm, rel=1e-2)


def test_every_lead_is_labelled_and_shape_is_checked():
    fig = plot_ecg12(np.zeros((12, 1000)), fs=100)
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"} <= labels
    with pytest.raises(ValueError, match="12, n"):
        plot_ecg12(np.zeros((8, 100)))
    assert len(plot_compare(np.zeros((12, 50)), np.ones((12, 50))).axes) == 12


def _traces(fig) -> list[np.ndarray]:
    """(x, y) data of every drawn ECG trace (lines with more than the two points of a lead separator)."""
    return [np.asarray(ln.get_xydata()) for ln in fig.axes[0].lines if len(ln.get_xdata()) > 2]


def _assert_drawn_in_full(fig, x12, fs):
    """Every lead's trace is drawn at its true amplitude (no clipping), inside the saved page."""
    from nvae_ecg.leads import LEADS12

    traces = _traces(fig)
    ys = [tr[:, 1] for tr in traces]
    height = 12.0
    layout = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
    n = x12.shape[1]
    for r, names in enumerate(layout):
        base = height - (r + 0.5) * 3.0
        for c, name in enumerate(names):
            lo, hi = int(round(c * n / 4)), int(round((c + 1) * n / 4))
            want = base + x12[LEADS12.index(name), lo:hi]
            assert any(len(y) == len(want) and np.allclose(y, want) for y in ys), name
    rhythm = 1.5 + x12[LEADS12.index("II")]
    assert any(len(y) == n and np.allclose(y, rhythm) for y in ys), "rhythm strip"
    # Nothing falls off the page: the traces' extent lies inside the figure.
    fig.canvas.draw()
    pix = np.concatenate([fig.axes[0].transData.transform(tr) for tr in traces])
    w, h = fig.canvas.get_width_height()
    assert pix[:, 1].min() >= -1 and pix[:, 1].max() <= h + 1 and pix[:, 0].min() >= -1 and pix[:, 0].max() <= w + 1


def test_tall_waves_are_drawn_in_full_not_clipped():
    """A 3.5 mV R wave in V4 (top row) and a -2.5 mV S wave in the lead II rhythm strip reach their true values."""
    fs = 500
    x = np.zeros((12, 5000))
    t = np.arange(5000) / fs
    qrs = np.exp(-0.5 * ((t[:, None] - np.arange(0.5, 10, 1.0)[None]) / 0.012) ** 2).sum(axis=1)
    x[9] = 3.5 * qrs    # V4
    x[1] = -2.5 * qrs   # II
    x[6] = -3.0 * qrs   # V1: a deep S wave reaching into the row below
    fig = plot_ecg12(x, fs=fs, title="tall")
    peak = max(tr[:, 1].max() for tr in _traces(fig))
    assert peak == pytest.approx(10.5 + 3.5, abs=1e-3)  # top-row baseline 10.5 mV + 3.5 mV (clipped: 12.0)
    assert min(tr[:, 1].min() for tr in _traces(fig)) == pytest.approx(1.5 - 2.5, abs=1e-3)
    _assert_drawn_in_full(fig, x, fs)


def test_real_lvh_record_is_drawn_at_full_voltage(sample_dir):
    """JS20003 (left ventricular hypertrophy, SNOMED 55827005): a 4.5 mV R wave in V4 reaches 4.5 mV on the grid."""
    from nvae_ecg.data.challenge import read_record
    from nvae_ecg.leads import LEADS12

    rec = read_record(next(sample_dir.rglob("JS20003.hea")))
    x = rec.signal
    assert "55827005" in rec.dx
    v4 = x[LEADS12.index("V4"), 3750:]  # V4's column: the last 2.5 s of the top row
    assert v4.max() > 2.0
    fig = plot_ecg12(x, fs=rec.fs)
    top = max(tr[:, 1].max() for tr in _traces(fig))
    assert top >= 10.5 + v4.max() - 1e-9
    _assert_drawn_in_full(fig, x, rec.fs)

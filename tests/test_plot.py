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

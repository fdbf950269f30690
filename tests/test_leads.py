"""Lead algebra: 8 <-> 12 leads with Einthoven's and Goldberger's identities."""

import numpy as np
import pytest
import torch

from nvae_ecg.leads import (INDEPENDENT_IDX, LEADS8, LEADS12, eight_to_twelve, limb_identity_error,
                            twelve_to_eight)


def _random8(shape=(3, 8, 50), seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def test_independent_leads_positions():
    assert [LEADS12[i] for i in INDEPENDENT_IDX] == list(LEADS8)


def test_identities_written_out():
    x8 = _random8()
    x12 = eight_to_twelve(x8)
    i, ii, iii, avr, avl, avf = (x12[:, LEADS12.index(n)] for n in ("I", "II", "III", "aVR", "aVL", "aVF"))
    np.testing.assert_allclose(ii, i + iii)
    np.testing.assert_allclose(avr, -(i + ii) / 2)
    np.testing.assert_allclose(avl, (i - iii) / 2)
    # The paper's printed aVF formula has a typo; this is the textbook (and Russian-version) identity.
    np.testing.assert_allclose(avf, (ii + iii) / 2)
    np.testing.assert_array_equal(x12[:, 6:], x8[:, 2:])


def test_round_trip_numpy_and_torch():
    x8 = _random8()
    np.testing.assert_array_equal(twelve_to_eight(eight_to_twelve(x8)), x8)
    t8 = torch.from_numpy(x8)
    t12 = eight_to_twelve(t8)
    assert isinstance(t12, torch.Tensor) and t12.dtype == torch.float64
    np.testing.assert_allclose(t12.numpy(), eight_to_twelve(x8))
    assert torch.equal(twelve_to_eight(t12), t8)


def test_other_axis_and_single_record():
    x8 = _random8((8, 20))
    assert eight_to_twelve(x8).shape == (12, 20)
    xt = _random8((20, 8))
    np.testing.assert_allclose(eight_to_twelve(xt, axis=-1), eight_to_twelve(xt.T).T)


def test_identity_error_detects_violation():
    x12 = eight_to_twelve(_random8())
    assert limb_identity_error(x12) < 1e-12
    x12[1, LEADS12.index("aVF"), 7] += 0.25
    assert limb_identity_error(x12) == pytest.approx(0.25)


def test_wrong_lead_count_is_rejected():
    with pytest.raises(ValueError, match="expects 8 leads"):
        eight_to_twelve(np.zeros((2, 7, 10)))
    with pytest.raises(ValueError, match="expects 12 leads"):
        twelve_to_eight(np.zeros((2, 8, 10)))

"""Lead algebra of the 12-lead ECG: the 8 independent leads and Einthoven/Goldberger.

The generators model only the 8 independent leads ``I, III, V1..V6``; the four
remaining limb leads are linear functions of I and III (Einthoven's law and
Goldberger's augmented leads). The paper prints aVF with a typo; the identities
used here are the textbook ones (and those of the paper's Russian version)::

    II  = I + III
    aVR = -(I + II) / 2
    aVL = (I - III) / 2
    aVF = (II + III) / 2

All functions are batch-first, take numpy arrays or torch tensors with the lead
axis at ``axis`` (default -2, i.e. ``(..., leads, time)``) and keep the type.

Example::

    python -c "import numpy as np; from nvae_ecg.leads import eight_to_twelve; print(eight_to_twelve(np.ones((8, 10))).shape)"
"""

from __future__ import annotations

import sys

import numpy as np

#: Lead order of the PhysioNet/CinC Challenge 2021 headers (and of every 12-lead array here).
LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: The 8 independent leads the generators model, in the order of the mixture's coupling.
LEADS8 = ("I", "III", "V1", "V2", "V3", "V4", "V5", "V6")
#: Position of each of LEADS8 inside LEADS12.
INDEPENDENT_IDX = tuple(LEADS12.index(name) for name in LEADS8)

# 12 x 8 matrix M with x12 = M @ x8 (rows: LEADS12, columns: LEADS8).
_M = np.zeros((12, 8), dtype=np.float64)
_M[0, 0] = 1.0                      # I
_M[1, 0], _M[1, 1] = 1.0, 1.0       # II = I + III
_M[2, 1] = 1.0                      # III
_M[3, 0], _M[3, 1] = -1.0, -0.5     # aVR = -(I + II)/2 = -I - III/2
_M[4, 0], _M[4, 1] = 0.5, -0.5      # aVL = (I - III)/2
_M[5, 0], _M[5, 1] = 0.5, 1.0       # aVF = (II + III)/2 = I/2 + III
for _k in range(6):
    _M[6 + _k, 2 + _k] = 1.0         # V1..V6
EIGHT_TO_TWELVE = _M


def _is_tensor(x) -> bool:
    # torch is imported lazily: data preparation never needs it, and importing it costs ~0.6 GB per worker.
    # An object can only be a tensor if torch has already been imported by its creator.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _move(x, axis: int):
    if _is_tensor(x):
        return x.movedim(axis, -1)
    return np.moveaxis(np.asarray(x), axis, -1)


def _unmove(x, axis: int):
    if _is_tensor(x):
        return x.movedim(-1, axis)
    return np.moveaxis(x, -1, axis)


def _check(x, n: int, axis: int, what: str) -> None:
    if x.ndim < 1 or x.shape[axis] != n:
        raise ValueError(f"{what} expects {n} leads on axis {axis}, got shape {tuple(x.shape)}")


def twelve_to_eight(x, axis: int = -2):
    """Select the 8 independent leads (I, III, V1..V6) from a 12-lead array or tensor."""
    _check(x, 12, axis, "twelve_to_eight")
    idx = list(INDEPENDENT_IDX)
    if _is_tensor(x):
        import torch

        return x.index_select(axis if axis >= 0 else x.ndim + axis, torch.tensor(idx, device=x.device))
    return np.take(np.asarray(x), idx, axis=axis)


def eight_to_twelve(x, axis: int = -2):
    """Expand 8 independent leads to 12 leads with Einthoven's and Goldberger's identities."""
    _check(x, 8, axis, "eight_to_twelve")
    if _is_tensor(x):
        import torch

        m = torch.as_tensor(EIGHT_TO_TWELVE, dtype=x.dtype, device=x.device)
        y = _move(x, axis) @ m.T
        return _unmove(y, axis)
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    y = _move(x, axis).astype(dtype, copy=False) @ EIGHT_TO_TWELVE.T.astype(dtype)
    return _unmove(y, axis)


def limb_identity_error(x12, axis: int = -2) -> float:
    """Largest absolute violation of the four limb-lead identities in a 12-lead array (same units)."""
    _check(x12, 12, axis, "limb_identity_error")
    if _is_tensor(x12):
        x12 = x12.detach().cpu().double().numpy()
    x = np.moveaxis(np.asarray(x12, dtype=np.float64), axis, -2)
    if x.size == 0:
        return 0.0
    rebuilt = eight_to_twelve(twelve_to_eight(x))
    return float(np.max(np.abs(rebuilt - x)))

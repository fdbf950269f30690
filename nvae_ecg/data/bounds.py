"""Per-lead min-max normalisation bounds of a prepared dataset (``bounds.json``).

The outlier filter of the paper (Sec. "Data") keeps records whose 8 independent
leads stay inside a per-lead band: the 2.5th percentile of the per-record minima
and the 97.5th percentile of the per-record maxima. The same band is the min-max
normalisation the generators train on: ``unit = (x_mV - lower) / (upper - lower)``,
clipped to [0, 1], and ``from_unit`` maps generated signals back to mV.
:class:`Bounds` holds the two (8,) vectors in :data:`nvae_ecg.leads.LEADS8` order
and converts numpy arrays or torch tensors whose lead axis is -2 (``(..., 8, T)``).

Example::

    python -c "from nvae_ecg.data.bounds import Bounds; print(Bounds.from_prepared('prepared', 'ptb-xl'))"
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvae_ecg.io import atomic_write_json
from nvae_ecg.leads import LEADS8

_PREPARE_HINT = "run scripts/prepare_data.sh or python -m nvae_ecg.data.prepare RAW_DIR OUT_DIR"

# Read once at import: os.umask can only be queried by setting it.


@dataclass
class Bounds:
    """Lower/upper band in mV for the 8 independent leads (LEADS8 order)."""

    lower: np.ndarray
    upper: np.ndarray
    lower_percentile: float = 2.5
    upper_percentile: float = 97.5

    def __post_init__(self):
        self.lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        n = len(LEADS8)
        if self.lower.shape != (n,) or self.upper.shape != (n,):
            raise ValueError(f"bounds need {n} values per side (leads {list(LEADS8)}), got {self.lower.shape} and {self.upper.shape}")
        if not (np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))):
            raise ValueError("bounds must be finite numbers")
        if np.any(self.upper <= self.lower):
            bad = [LEADS8[i] for i in np.flatnonzero(self.upper <= self.lower)]
            raise ValueError(f"upper bound must exceed lower bound for every lead; violated for {bad}")

    def _vectors(self, x):
        """Lower bound and scale shaped (8, 1) in the type, dtype and device of ``x``."""
        scale = self.upper - self.lower
        try:
            import torch
        except ImportError:  # torch is optional for numpy-only callers
            torch = None
        if torch is not None and isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            lo = torch.as_tensor(self.lower, dtype=dtype, device=x.device).unsqueeze(-1)
            sc = torch.as_tensor(scale, dtype=dtype, device=x.device).unsqueeze(-1)
            return lo, sc
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return self.lower.astype(dtype)[:, None], scale.astype(dtype)[:, None]

    def _check(self, x, what: str) -> None:
        if x.ndim < 2 or x.shape[-2] != len(LEADS8):
            raise ValueError(f"{what} expects the 8 leads {list(LEADS8)} on axis -2, got shape {tuple(x.shape)}")

    def to_unit(self, x8, clip: bool = True):
        """Map mV signals (..., 8, T) to [0, 1] by the bounds (clipped unless clip=False); numpy or torch."""
        if not hasattr(x8, "ndim"):
            x8 = np.asarray(x8)
        self._check(x8, "to_unit")
        lo, sc = self._vectors(x8)
        u = (x8 - lo) / sc
        if clip:
            u = u.clamp(0.0, 1.0) if hasattr(u, "clamp") else np.clip(u, 0.0, 1.0)
        return u

    def from_unit(self, u8):
        """Map unit-range signals (..., 8, T) back to mV; numpy or torch."""
        if not hasattr(u8, "ndim"):
            u8 = np.asarray(u8)
        self._check(u8, "from_unit")
        lo, sc = self._vectors(u8)
        return u8 * sc + lo

    def to_dict(self) -> dict:
        """JSON-ready dict in the bounds.json layout."""
        return {
            "leads": list(LEADS8),
            "lower": [float(v) for v in self.lower],
            "upper": [float(v) for v in self.upper],
            "lower_percentile": float(self.lower_percentile),
            "upper_percentile": float(self.upper_percentile),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write bounds.json atomically (temporary file + os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Bounds":
        """Read a bounds.json, with an error naming the file when it is missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"bounds file {path} does not exist; {_PREPARE_HINT}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"bounds file {path} is not valid JSON ({exc}); re-run the preparation") from exc
        if not isinstance(data, dict) or not {"lower", "upper"} <= set(data):
            raise ValueError(f"bounds file {path} lacks 'lower'/'upper'; re-run the preparation")
        leads = data.get("leads", list(LEADS8))
        if list(leads) != list(LEADS8):
            raise ValueError(f"bounds file {path} is for leads {leads}, expected {list(LEADS8)}")
        try:
            return cls(
                lower=np.asarray(data["lower"], dtype=np.float64),
                upper=np.asarray(data["upper"], dtype=np.float64),
                lower_percentile=float(data.get("lower_percentile", math.nan)),
                upper_percentile=float(data.get("upper_percentile", math.nan)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bounds file {path} is invalid: {exc}") from exc

    @classmethod
    def from_prepared(cls, prepared_dir: str | os.PathLike, dataset: str) -> "Bounds":
        """Bounds of one prepared dataset: ``prepared_dir/dataset/bounds.json``."""
        folder = Path(prepared_dir) / dataset
        if not folder.is_dir():
            raise FileNotFoundError(f"prepared dataset folder {folder} does not exist; {_PREPARE_HINT}")
        return cls.load(folder / "bounds.json")

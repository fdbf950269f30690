"""Tests of the prepared-data loaders, index selection, torch datasets and normalisation bounds."""

from __future__ import annotations

import contextlib
import io
import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nvae_ecg.classes import CLASS_ABBREVS, resolve_classes
from nvae_ecg.data import prepare
from nvae_ecg.data.bounds import Bounds
from nvae_ecg.data.datasets import GeneratorDataset, load_prepared, select_indices
from nvae_ecg.leads import INDEPENDENT_IDX


@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared_synthetic")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        prepare.main(prepare.parse_args([str(synthetic_raw), str(out), "--workers", "1"]))
    return out


def test_load_prepared_shapes_and_order(prepared):
    p = load_prepared(prepared, "georgia")
    assert isinstance(p.signals, np.memmap) and p.signals.shape[1:] == (12, 5000)
    assert p.labels.shape == (p.signals.shape[0], 9) and len(p) == p.signals.shape[0]
    assert list(p.records["index"]) == list(range(len(p)))
    assert p.bounds.lower.shape == (8,)


def test_missing_folder_or_file_says_how_to_prepare(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="nvae_ecg.data.prepare"):
        load_prepared(tmp_path, "ptb-xl")
    (tmp_path / "ptb-xl").mkdir()
    for name in ("signals.npy", "records.csv", "bounds.json"):
        (tmp_path / "ptb-xl" / name).write_bytes((prepared / "ptb-xl" / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="labels.npy"):
        GeneratorDataset(tmp_path, "ptb-xl")


def test_select_indices_splits_classes_fraction(prepared):
    p = load_prepared(prepared, "ptb-xl")
    parts = [select_indices(p, s) for s in ("train", "val", "test")]
    allidx = np.concatenate(parts)
    assert len(allidx) == len(p) == len(np.unique(allidx))
    np.testing.assert_array_equal(select_indices(p, "all"), np.arange(len(p)))
    af = select_indices(p, "train", classes="AF", require_label=True)
    assert len(af) > 0 and np.all(p.labels[af, CLASS_ABBREVS.index("AF")] == 1)
    assert set(af) <= set(parts[0])
    assert len(select_indices(p, "train", classes="AF")) == len(parts[0])  # no require_label: whole split
    half = select_indices(p, "train", fraction=0.5, fraction_seed=3)
    assert len(half) == round(0.5 * len(parts[0])) and np.all(np.diff(half) > 0)
    np.testing.assert_array_equal(half, select_indices(p, "train", fraction=0.5, fraction_seed=3))
    assert not np.array_equal(half, select_indices(p, "train", fraction=0.5, fraction_seed=4))
    quarter = select_indices(p, "train", fraction=0.25, fraction_seed=3)
    assert set(quarter) <= set(half)  # nested subsets for growing fractions
    with pytest.raises(ValueError):
        select_indices(p, "train", fraction=0.0)
    with pytest.raises(ValueError):
        select_indices(p, "training")


def test_generator_dataset_normalised_and_labels(prepared):
    d = GeneratorDataset(prepared, "ptb-xl", "train", classes="SR,MI,AF")
    p = load_prepared(prepared, "ptb-xl")
    assert d.classes == resolve_classes("SR,MI,AF") and d.class_names == ["SR", "MI", "AF"]
    assert d.labels.shape == (len(d), 3) and np.all(d.labels.sum(axis=1) > 0)  # require_label=True by default
    x, y = d[0]
    assert x.dtype == torch.float32 and x.shape == (8, 5000) and y.dtype == torch.float32 and y.shape == (3,)
    row = np.asarray(p.signals[d.indices[0]])[list(INDEPENDENT_IDX)]
    lo, hi = d.bounds.lower[:, None], d.bounds.upper[:, None]
    np.testing.assert_allclose(x.numpy(), np.clip((row - lo) / (hi - lo), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), p.labels[d.indices[0], [0, 1, 4]])
    xs = torch.stack([d[i][0] for i in range(len(d))])
    assert xs.min() >= 0 and xs.max() <= 1 and xs.min() < 0.05 and xs.max() > 0.95  # band is used, not squashed
    every = GeneratorDataset(prepared, "ptb-xl", "all", require_label=False)
    assert len(every) == len(p) and len(every.classes) == 9


def test_dataset_pickles_without_its_memory_map_into_dataloader_workers(prepared):
    # (formerly on ClassifierDataset, removed as unused: the lazy memory map is the shared base class's)
    c = GeneratorDataset(prepared, "ningbo", "train", classes="SR,SB", fraction=0.5, fraction_seed=1,
                         require_label=False)
    assert len(pickle.dumps(c)) < 200_000  # the memory map is not pickled into DataLoader workers
    batches = list(DataLoader(c, batch_size=8, num_workers=2))
    assert sum(b[0].shape[0] for b in batches) == len(c)
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), c.labels)


def test_bounds_numpy_torch_roundtrip_and_io(tmp_path):
    b = Bounds(lower=-np.arange(1, 9, dtype=float), upper=np.arange(1, 9, dtype=float) * 2)
    x = np.random.default_rng(0).uniform(-1, 2, size=(4, 8, 100))
    u = b.to_unit(x)
    assert u.shape == x.shape and u.min() >= 0 and u.max() <= 1
    np.testing.assert_allclose(b.from_unit(b.to_unit(x, clip=False)), x, atol=1e-12)
    t = torch.tensor(x, dtype=torch.float32)
    ut = b.to_unit(t)
    assert isinstance(ut, torch.Tensor) and ut.dtype == torch.float32
    np.testing.assert_allclose(ut.numpy(), u, atol=1e-6)
    np.testing.assert_allclose(b.from_unit(ut).numpy(), b.from_unit(u), atol=1e-5)
    assert b.to_unit(np.full((8, 1), 100.0)).max() == 1.0  # clipped
    path = b.save(tmp_path / "bounds.json")
    b2 = Bounds.load(path)
    np.testing.assert_array_equal(b2.lower, b.lower)
    np.testing.assert_array_equal(b2.upper, b.upper)
    with pytest.raises(ValueError, match="8 leads"):
        b.to_unit(np.zeros((12, 10)))


def test_bounds_load_errors(tmp_path, prepared):
    with pytest.raises(FileNotFoundError, match="prepare"):
        Bounds.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Bounds.load(bad)
    bad.write_text(json.dumps({"lower": [0] * 8, "upper": [1] * 7}))
    with pytest.raises(ValueError, match="bad.json"):
        Bounds.load(bad)
    bad.write_text(json.dumps({"lower": [1] * 8, "upper": [1] * 8}))
    with pytest.raises(ValueError, match="upper bound must exceed"):
        Bounds.load(bad)
    b = Bounds.from_prepared(prepared, "georgia")
    assert np.all(b.upper > b.lower) and b.lower_percentile == 2.5
    with pytest.raises(FileNotFoundError):
        Bounds.from_prepared(prepared, "nonexistent")

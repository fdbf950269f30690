"""The generated-sample format: streaming, atomic write, validation on read."""

import json

import numpy as np
import pytest

from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.samples import SampleWriter, read_samples


def _batch(n, seed=0, length=64):
    x12 = eight_to_twelve(np.random.default_rng(seed).normal(size=(n, 8, length))).astype(np.float32)
    y = np.zeros((n, 9), dtype=np.uint8)
    y[:, 1] = 1
    return x12, y


def test_write_and_read_round_trip(tmp_path):
    out = tmp_path / "gen"
    a, ya = _batch(3, 0)
    b, yb = _batch(2, 1)
    with SampleWriter(out, 5, length=64) as w:
        w.write(a, ya)
        w.write(b, yb)
        w.close({"generator": "test", "seed": 7})
    s = read_samples(out)
    assert len(s) == 5 and s.signals.dtype == np.float32
    np.testing.assert_array_equal(s.signals[:3], a)
    np.testing.assert_array_equal(s.signals[3:], b)
    assert s.meta["generator"] == "test" and s.meta["counts"] == {"MI": 5}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_crash_leaves_nothing(tmp_path):
    out = tmp_path / "gen"
    a, ya = _batch(3)
    with pytest.raises(RuntimeError, match="boom"):
        with SampleWriter(out, 5, length=64) as w:
            w.write(a, ya)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_bad_writes_are_refused(tmp_path):
    a, ya = _batch(3)
    w = SampleWriter(tmp_path / "gen", 5, length=64)
    w.write(a, ya)
    with pytest.raises(RuntimeError, match="only 3 of 5"):
        w.close({})
    bad = a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        w.write(bad, ya)
    with pytest.raises(ValueError, match="shape"):
        w.write(a[:, :8], ya)
    w.abort()
    with pytest.raises(FileExistsError):
        (tmp_path / "exists").mkdir()
        SampleWriter(tmp_path / "exists", 1, length=64)


def test_read_validates(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_samples(tmp_path / "missing")
    out = tmp_path / "gen"
    a, ya = _batch(2)
    with SampleWriter(out, 2, length=64) as w:
        w.write(a, ya)
        w.close({"generator": "x"})
    meta = json.loads((out / "meta.json").read_text())
    meta["format"] = "other"
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown format"):
        read_samples(out)
    (out / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="labels.npy is missing"):
        read_samples(out)

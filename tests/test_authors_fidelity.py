"""Fidelity to the authors' code: their generation protocol (``--protocol authors``) and their VAE training set."""

import numpy as np
import pytest
import torch

from nvae_ecg import generate, train
from nvae_ecg.classes import class_index
from nvae_ecg.data.datasets import GeneratorDataset, load_prepared
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.model import AutoEncoder
from nvae_ecg.neural_operations import BN_MOMENTUM
from nvae_ecg.sampler_driver import bounds_from_checkpoint
from nvae_ecg.samples import read_samples


@pytest.fixture(scope="module")
def prepared(prepared_demo90):
    return prepared_demo90


def _train_args(prepared, root, save, *extra):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny",
        "--batch_size", "8", "--epochs", "1", "--max_steps", "4", "--num_workers", "0", "--seed", "5",
        "--log_every", "2", "--iw_samples", "2", "--max_val_batches", "1", "--sample_every", "0", *extra])


@pytest.fixture(scope="module")
def checkpoint(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert train.main(_train_args(prepared, root, "run")) == 0
    return root / "run" / "checkpoints" / "latest.pt"


# ---- training set --------------------------------------------------------------------------------------------------
class _Opened(Exception):
    """Raised by the dataset spy once the trainer has opened both splits."""


def _opened_datasets(prepared, tmp_path, monkeypatch, *extra) -> dict:
    opened = {}

    def spy(*a, **k):
        ds = GeneratorDataset(*a, **k)
        opened[ds.split] = ds
        if len(opened) == 2:
            raise _Opened
        return ds

    monkeypatch.setattr(train, "GeneratorDataset", spy)
    with pytest.raises(_Opened):
        train.main(_train_args(prepared, tmp_path, "sel", "--classes", "MI,AF", *extra))
    return opened


def test_vae_trains_on_every_training_record_like_the_authors(prepared, tmp_path, monkeypatch):
    """The authors' ECGDataset keeps every record of the split, all-zero label where none of the classes applies."""
    p = load_prepared(prepared, "ptb-xl")
    splits = p.records["split"].to_numpy()
    cols = [class_index("MI"), class_index("AF")]
    opened = _opened_datasets(prepared, tmp_path, monkeypatch)
    for split in ("train", "val"):
        assert len(opened[split]) == (splits == split).sum()
    assert (opened["train"].labels.sum(axis=1) == 0).any()  # the records without MI or AF are in, label all-zero
    # --labelled_only: the previous behaviour, only records carrying one of the classes.
    opened = _opened_datasets(prepared, tmp_path, monkeypatch, "--labelled_only")
    labelled = (splits == "train") & (p.labels[:, cols].sum(axis=1) > 0)
    assert len(opened["train"]) == labelled.sum() < (splits == "train").sum()
    assert (opened["train"].labels.sum(axis=1) > 0).all()


# ---- generation protocol -------------------------------------------------------------------------------------------
def test_authors_temperature_set_is_theirs():
    # random.choice(np.arange(0.6, 1.0, 0.1)) in the authors' generate_signals.py: four values, not five.
    assert generate.AUTHORS_TEMPERATURES == tuple(np.arange(0.6, 1.0, 0.1).tolist())
    assert generate.AUTHORS_TEMPERATURES == (0.6, 0.7, 0.7999999999999999, 0.8999999999999999)
    draws = generate.authors_temperatures(400, np.random.default_rng(0))
    assert set(draws.tolist()) == set(generate.AUTHORS_TEMPERATURES)
    assert (generate.authors_temperatures(5, np.random.default_rng(1)) ==
            generate.authors_temperatures(5, np.random.default_rng(1))).all()  # seeded by --seed


PLAN = ["--task_type", "custom", "--labels", "SR", "--count", "3", "--labels", "AF", "--count", "2",
        "--labels", "LAD,SR", "--count", "2"]


def _means(model) -> list[torch.Tensor]:
    return [mean for mean, _, _ in generate.batchnorm_state(model)]


def _run(checkpoint, out, monkeypatch, *extra):
    """Generate the PLAN; returns (meta, BN re-estimation calls, sampling calls)."""
    calls, draws = [], []
    real_readjust, real_sample = generate.readjust_bn_combination, AutoEncoder.sample

    def spy_readjust(model, row, iters, batch_size, t, device, *rest, **kw):
        before = _means(model)
        real_readjust(model, row, iters, batch_size, t, device, *rest, **kw)
        calls.append({"row": np.asarray(row).tolist(), "iters": iters, "batch": batch_size, "t": t,
                      "before": before, "after": _means(model),
                      "momenta": {m.momentum for m in generate.batchnorm_layers(model)}})

    def spy_sample(self, y, t=1.0, *rest, **kw):
        draws.append({"row": y[0].tolist(), "n": len(y), "t": t, "training": self.training, "means": _means(self)})
        return real_sample(self, y, t, *rest, **kw)

    monkeypatch.setattr(generate, "readjust_bn_combination", spy_readjust)
    monkeypatch.setattr(AutoEncoder, "sample", spy_sample)
    rc = generate.main(generate.parse_args(["--checkpoint", str(checkpoint), *PLAN, "--out_dir", str(out),
                                            "--batch_size", "2", "--device", "cpu", *extra]))
    assert rc == 0
    return read_samples(out).meta, calls, draws


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_authors_protocol_reestimates_bn_per_combination(checkpoint, tmp_path, monkeypatch):
    trained, _, _ = generate.load_model(checkpoint, torch.device("cpu"))
    trained = _means(trained)
    meta, calls, draws = _run(checkpoint, tmp_path / "g", monkeypatch, "--protocol", "authors", "--num_iters", "2")
    rows = [[1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0, 0]]
    assert [c["row"] for c in calls] == rows
    for i, c in enumerate(calls):
        assert c["iters"] == 2 and c["batch"] == generate.AUTHORS_BN_BATCH == 32
        assert c["t"] in generate.AUTHORS_TEMPERATURES
        assert c["momenta"] == {BN_MOMENTUM} == {0.05}  # their set_bn keeps the trained momentum
        assert _same(c["before"], trained)  # every combination starts from the checkpoint's statistics
        assert not _same(c["after"], trained)
        mine = [d for d in draws if d["row"] == rows[i]]
        assert sum(d["n"] for d in mine) == (3, 2, 2)[i]
        # Its ECGs are drawn in eval mode, at its temperature, with its own re-estimated statistics.
        assert all(d["t"] == c["t"] and not d["training"] and _same(d["means"], c["after"]) for d in mine)
    assert not _same(calls[0]["after"], calls[1]["after"]) and not _same(calls[1]["after"], calls[2]["after"])
    assert meta["protocol"] == "authors" and meta["temperature_per_combination"] == [c["t"] for c in calls]
    assert meta["temperature_set"] == list(generate.AUTHORS_TEMPERATURES) and meta["temperature"] is None
    assert meta["readjust_bn"] and meta["bn_per_combination"] and (meta["bn_iters"], meta["bn_batch_size"]) == (2, 32)


def test_plain_protocol_is_unchanged(checkpoint, tmp_path, monkeypatch):
    trained, _, _ = generate.load_model(checkpoint, torch.device("cpu"))
    trained = _means(trained)
    meta, calls, draws = _run(checkpoint, tmp_path / "g", monkeypatch)
    assert calls == [] and len(draws) == 4  # 3 + 2 + 2 ECGs in batches of 2
    assert all(d["t"] == 1.0 and not d["training"] and _same(d["means"], trained) for d in draws)
    assert meta["protocol"] == "plain" and meta["temperature"] == 1.0 and not meta["readjust_bn"]
    assert meta["temperature_per_combination"] == [1.0, 1.0, 1.0] and meta["bn_batch_size"] is None
    # Same seed, same ECGs as the sampler before --protocol existed: load, then one model.sample per batch at t = 1.
    torch.manual_seed(0)
    model, ckpt, _ = generate.load_model(checkpoint, torch.device("cpu"))
    bounds = bounds_from_checkpoint(ckpt)
    expected = []
    with torch.no_grad():
        for row, n in ((0, 2), (0, 1), (4, 2), (None, 2)):
            y = torch.eye(9)[[row] * n] if row is not None else torch.eye(9)[[0] * n] + torch.eye(9)[[2] * n]
            x01 = model.sample(y, t=1.0)
            expected.append(eight_to_twelve(bounds.from_unit(x01.double().numpy())).astype(np.float32))
    assert np.array_equal(np.asarray(read_samples(tmp_path / "g").signals), np.concatenate(expected))


def test_authors_protocol_refuses_plain_flags(checkpoint, tmp_path):
    for extra in (["--temperature", "0.8"], ["--temperature", "0"], ["--readjust_bn"],
                  ["--temperature_range", "0.5", "0.9"]):
        with pytest.raises(SystemExit, match="protocol authors"):
            generate.main(generate.parse_args(["--checkpoint", str(checkpoint), *PLAN, "--out_dir",
                                               str(tmp_path / "g"), "--device", "cpu", "--protocol", "authors",
                                               *extra]))

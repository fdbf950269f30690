"""Downstream benchmarks (train_test): counting, data assembly, metrics, model selection, results, report, smoke runs."""

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nvae_ecg.classes import CLASS_ABBREVS, class_index, resolve_classes
from nvae_ecg.counts import plan_summary
from nvae_ecg.samples import SampleWriter
from train_test.classifier import Standardizer, TrainConfig, fit, make_loader, predict
from train_test.data import (EcgSet, Source, discover_generated, enrichment_plan, generated_source,
                             lead_stats, pick_generated)
from train_test.metrics import auroc, bootstrap_auroc, rank_auroc, select_best_epoch
from train_test.results import ResultsStore

pytest.importorskip("fastai", reason="fastai is needed for the benchmark classifier")

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = resolve_classes("SR,LAD,LVH,AF,STach,IAVB,SB,TAb")


def _matrix(rows):
    y = np.zeros((len(rows), 9), dtype=np.uint8)
    for r, names in enumerate(rows):
        for n in names:
            y[r, class_index(n)] = 1
    return y


# ----------------------------------------------------------------------------------------------- counting


def test_addition_counts_per_label_combination():
    y = _matrix([["SR"]] * 10 + [["SR", "MI"]] * 4 + [["AF"]] * 3 + [[]] * 5)
    got = plan_summary(enrichment_plan(y, "addition", 0.5, [class_index("MI")]), CLASS_ABBREVS)
    assert got == {"SR": 5, "SR+MI": 2, "AF": round(1.5)}  # unlabelled records have nothing to generate from
    got = plan_summary(enrichment_plan(y, "addition", 1.5, [class_index("MI")]), CLASS_ABBREVS)
    assert got == {"SR": 15, "SR+MI": 6, "AF": round(4.5)}
    assert enrichment_plan(y, "addition", 0.0, [class_index("MI")]) == []


def test_imbalance_counts_mi_against_sr():
    y = _matrix([["SR"]] * 30 + [["SR", "MI"]] * 4 + [["MI"]] * 6 + [["LAD"]] * 2)
    # SR 34, MI 10: round(n x 24) MI ECGs, nothing else.
    for n, want in [(0.1, 2), (0.5, 12), (1.0, 24)]:
        plan = enrichment_plan(y, "imbalance", n, [class_index("MI")])
        assert plan_summary(plan, CLASS_ABBREVS) == {"MI": want}
        assert all(sum(item.labels) == 1 for item in plan)


def test_table1_example_through_the_shared_counts():
    # Paper Table I: SR 15,263 and LAD 4,061 -> 11,202 generated LAD ECGs at n = 1.
    y = np.zeros((15263 + 4061 + 100, 9), dtype=np.uint8)
    y[:15263, class_index("SR")] = 1
    y[15263:15263 + 4061, class_index("LAD")] = 1
    y[-100:, class_index("MI")] = 1
    got = plan_summary(enrichment_plan(y, "imbalance", 1.0, PRETRAIN), CLASS_ABBREVS)
    assert got["LAD"] == 11202
    assert "MI" not in got and "SR" not in got  # pretraining fills its own classes only
    assert got["AF"] == 15263
    assert plan_summary(enrichment_plan(y, "imbalance", 0.5, PRETRAIN), CLASS_ABBREVS)["LAD"] == 5601


# ----------------------------------------------------------------------------------------------- data


def _fake_generated(path, labels, generator="fake", task="imbalance", length=400, seed=0):
    rng = np.random.default_rng(seed)
    with SampleWriter(path, len(labels), length=length) as w:
        # Encode the row number in the signal so tests can check which rows were read.
        x = rng.normal(size=(len(labels), 12, length)).astype(np.float32)
        x[:, 0, 0] = np.arange(len(labels))
        w.write(x, labels)
        w.close({"generator": generator, "task_type": task})
    return path


def test_generated_sets_grouped_by_meta_and_picked_nested(tmp_path):
    labels = _matrix([["MI"]] * 20 + [["LAD"]] * 5)
    _fake_generated(tmp_path / "root" / "folder_name_says_nothing", labels, "cnvae", "imbalance")
    _fake_generated(tmp_path / "other", labels, "p2p", "imbalance", seed=1)
    sets = discover_generated([f"renamed={tmp_path / 'other'}"], tmp_path / "root")
    assert set(sets) == {("cnvae", "imbalance"), ("renamed", "imbalance")}
    gs = sets[("cnvae", "imbalance")]
    y = _matrix([["SR"]] * 14 + [["MI"]] * 4)
    small = pick_generated(gs, enrichment_plan(y, "imbalance", 0.5, [class_index("MI")]), seed=3)
    big = pick_generated(gs, enrichment_plan(y, "imbalance", 1.0, [class_index("MI")]), seed=3)
    assert len(small) == 5 and len(big) == 10 and set(small) <= set(big)
    assert (gs.labels[big][:, class_index("MI")] == 1).all()
    with pytest.raises(ValueError, match="too few ECGs.*MI: need 30, have 20"):
        pick_generated(gs, enrichment_plan(_matrix([["SR"]] * 30), "imbalance", 1.0, [class_index("MI")]))
    with pytest.raises(ValueError, match="two generated sets"):
        discover_generated([str(tmp_path / "root" / "folder_name_says_nothing")], tmp_path / "root")


def test_ecgset_batches_in_order_across_sources_and_lead_stats(tmp_path):
    a = np.random.default_rng(0).normal(size=(10, 12, 50)).astype(np.float32)
    b = np.random.default_rng(1).normal(2.0, 3.0, size=(6, 12, 50)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    sa = Source(tmp_path / "a.npy", [7, 2, 5], np.array([[1], [0], [1]]))
    sb = Source(tmp_path / "b.npy", [4, 0], np.array([[0], [1]]))
    ds = EcgSet([sa, sb])
    x, y = ds.__getitems__([4, 0, 3, 1])
    np.testing.assert_array_equal(x.numpy(), np.stack([b[0], a[7], b[4], a[2]]))
    np.testing.assert_array_equal(y.numpy()[:, 0], [1, 1, 0, 0])
    loader = make_loader(ds, 2, True, 0, torch.device("cpu"), seed=0)
    seen = torch.cat([xb[:, 0, 0] for xb, _ in loader])
    assert sorted(seen.tolist()) == sorted(np.concatenate([a[[7, 2, 5], 0, 0], b[[4, 0], 0, 0]]).tolist())
    mean, std = lead_stats([sa, sb])
    ref = np.concatenate([a[[7, 2, 5]], b[[4, 0]]]).astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- metrics


def test_auroc_per_class_and_macro_by_hand():
    y = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    s = np.array([[0.1, 0.5, 0.3], [0.4, 0.5, 0.2], [0.35, 0.2, 0.9], [0.8, 0.1, 0.1], [0.7, 0.3, 0.5],
                  [0.9, 0.5, 0.4]])
    # Class a: positives 0.35, 0.8, 0.9 vs negatives 0.1, 0.4, 0.7 -> 1 + 3 + 3 = 7 of 9 pairs.
    # Class b: positives 0.5, 0.3 vs negatives 0.5, 0.2, 0.1, 0.5 -> (0.5+1+1+0.5) + (0+1+1+0) = 5 of 8 pairs.
    with pytest.warns(RuntimeWarning, match=r"undefined.*\['c'\]"):
        res = auroc(y, s, ["a", "b", "c"])
    assert res.per_class["a"] == pytest.approx(7 / 9)
    assert res.per_class["b"] == pytest.approx(5 / 8)
    assert math.isnan(res.per_class["c"]) and res.undefined == ["c"]
    assert res.macro == pytest.approx((7 / 9 + 5 / 8) / 2)


def test_rank_auroc_matches_sklearn_and_bootstrap_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(300, 2))
    s = np.round(y * 0.7 + rng.normal(size=(300, 2)), 1)  # rounding makes ties
    for c in range(2):
        assert rank_auroc(y[:, c], s[:, c]) == pytest.approx(roc_auc_score(y[:, c], s[:, c]))
    r1 = bootstrap_auroc(y, s, ["x", "y"], n_boot=300, seed=1)
    r2 = bootstrap_auroc(y, s, ["x", "y"], n_boot=300, seed=1)
    assert r1.ci == r2.ci and r1.macro_ci == r2.macro_ci
    for c in ("x", "y"):
        lo, hi = r1.ci[c]
        assert lo < r1.per_class[c] < hi and hi - lo < 0.2
    assert r1.macro_ci[0] < r1.macro < r1.macro_ci[1]


def test_select_best_epoch_rules():
    assert select_best_epoch([0.5, 0.8, 0.7, 0.8]) == 1  # first maximum
    assert select_best_epoch([math.nan, 0.6, math.nan]) == 1
    with pytest.warns(RuntimeWarning, match="validation loss"):
        assert select_best_epoch([math.nan, math.nan, math.nan], [0.9, 0.4, 0.5]) == 1
    assert select_best_epoch([math.nan, math.nan]) == 1


def _tiny_sets(tmp_path, n=40, length=300):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
    x = rng.normal(size=(n, 12, length)).astype(np.float32)
    x[:, 0] += 2.0 * y[:, :1]  # something to learn
    np.save(tmp_path / "x.npy", x)
    mk = lambda rows: EcgSet([Source(tmp_path / "x.npy", rows, y[rows])])  # noqa: E731
    train_rows = np.arange(0, 24)
    return mk(train_rows), mk(np.arange(24, 32)), mk(np.arange(32, 40)), lead_stats([Source(tmp_path / "x.npy",
                                                                                            train_rows, y[train_rows])])


def test_model_selection_restores_the_best_validation_epoch(tmp_path):
    from train_test.xresnet1d import build_model

    train, val, test, stats = _tiny_sets(tmp_path)
    fake_scores = [0.2, 0.9, 0.5, 0.7]
    states = []

    def score(epoch, y_val, logits):
        assert y_val.shape == logits.shape == (8, 2)
        return fake_scores[epoch]

    def snapshot(epoch, model, s):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    torch.manual_seed(0)
    cfg = TrainConfig(arch="tiny", epochs=4, batch_size=8, lr=1e-2, num_workers=0, bootstrap=50, device="cpu")
    model, res = fit(build_model("tiny", 12, 2), train, val, test, stats, cfg, ["p", "q"], score_fn=score,
                     on_epoch_end=snapshot)
    assert res.best_epoch == 1 and res.val_score == fake_scores
    final = model.state_dict()
    assert all(torch.equal(final[k], states[1][k]) for k in final)
    assert not all(torch.equal(final[k], states[3][k]) for k in final)
    # The reported test AUROC is the one of the epoch-2 weights.
    check = build_model("tiny", 12, 2)
    check.load_state_dict(states[1])
    logits, _ = predict(check, make_loader(test, 8, False, 0, torch.device("cpu")), Standardizer(*stats),
                        torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = auroc(test.targets, logits, ["p", "q"])
    assert res.test["macro"] == pytest.approx(want.macro)
    assert len(res.train_loss) == 4 and all(np.isfinite(res.train_loss))


def test_results_store_resumes_and_refuses_other_settings(tmp_path):
    path = tmp_path / "r.json"
    st = ResultsStore(path, "enrich_train", {"epochs": 2})
    st.add("a|b|0.1|0", {"x": float("nan"), "y": np.float32(1.5)})
    again = ResultsStore(path, "enrich_train", {"epochs": 2})
    assert "a|b|0.1|0" in again and again.cells["a|b|0.1|0"] == {"x": None, "y": 1.5}
    json.loads(path.read_text())  # strict JSON (no NaN)
    with pytest.raises(ValueError, match="other settings"):
        ResultsStore(path, "enrich_train", {"epochs": 3})
    with pytest.raises(ValueError, match="enrich_train"):
        ResultsStore(path, "enrich_pretrain", {"epochs": 2})


# ----------------------------------------------------------------------------------------------- report


def _hand_results(tmp_path):
    cells = {}
    aucs = {("baseline", "none", 0.0): [0.80, 0.82], ("gA", "addition", 0.5): [0.84, 0.86],
            ("gB", "addition", 0.5): [0.81, 0.83], ("gA", "addition", 1.0): [0.70, 0.72],
            ("gB", "addition", 1.0): [0.90, 0.88]}
    for (g, t, p), vals in aucs.items():
        for seed, v in enumerate(vals):
            cells[f"{g}|{t}|{p:g}|{seed}"] = {
                "generator": g, "task_type": t, "proportion": p, "seed": seed, "best_epoch": 0, "val_score": [0.5],
                "n_real": 10, "n_generated": 0,
                "test": {"per_class": {"MI": v}, "macro": v, "ci": {"MI": [v - 0.05, v + 0.05]},
                         "macro_ci": [v - 0.05, v + 0.05]}}
    (tmp_path / "enrich_train.json").write_text(json.dumps({"experiment": "enrich_train",
                                                            "config": {"target": "MI"}, "cells": cells}))
    pcells = {}
    per_arm = {"none": {"SR": 0.6, "AF": 0.7}, "real": {"SR": 0.8, "AF": 0.6}, "gA": {"SR": 0.7, "AF": None}}
    for arm, per in per_arm.items():
        for frac in (0.5, 1.0):
            bump = 0.1 if frac == 1.0 else 0.0
            pc = {k: (None if v is None else v + bump) for k, v in per.items()}
            defined = [v for v in pc.values() if v is not None]
            pcells[f"georgia|{arm}|x|1|{frac:g}|0"] = {
                "target": "georgia", "arm": arm, "task_type": "none" if arm in ("none", "real") else "imbalance",
                "proportion": 0.0 if arm in ("none", "real") else 1.0, "fraction": frac, "seed": 0, "best_epoch": 0,
                "test": {"per_class": pc, "macro": sum(defined) / len(defined)}}
    (tmp_path / "enrich_pretrain.json").write_text(json.dumps({"experiment": "enrich_pretrain", "config": {},
                                                               "cells": pcells, "pretrain": {}}))
    (tmp_path / "unrelated.json").write_text("[1, 2]")


def test_report_renders_tables_csv_and_figures(tmp_path):
    from train_test.report import build_report

    _hand_results(tmp_path)
    rep = build_report(tmp_path)
    out = tmp_path / "report"
    for name in ("tables.md", "report.json", "enrich_train.csv", "enrich_pretrain.csv", "enrich_train_addition.png",
                 "enrich_pretrain_georgia.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "tables.md").read_text()
    assert "Baseline (proportion 0, real training split only): 0.810 ± 0.014" in md
    assert "| 0.5 | **0.850 ± 0.014** | 0.820 ± 0.014 |" in md
    assert "| 1 | 0.710 ± 0.014 | **0.890 ± 0.014** |" in md
    # Georgia (Table VI layout): means over fractions 0.5 and 1.0; gA's AF is undefined.
    assert "| Class | No pretraining | PTB-XL (real) | gA |" in md
    assert "| SR | 0.650 | **0.850** | 0.750 |" in md
    assert "| AF | **0.750** | 0.650 | n/a |" in md
    summary = json.loads((out / "report.json").read_text())
    g = summary["enrich_train"]["tasks"]["addition"]["generators"]["gB"]["1"]
    assert g["mean"] == pytest.approx(0.89) and g["n"] == 2
    assert len((out / "enrich_train.csv").read_text().strip().splitlines()) == 1 + 10
    assert rep["enrich_pretrain"]["targets"]["georgia"]["arms"]["gA"]["macro"]["mean"] == pytest.approx(
        np.mean([0.7, 0.8]))


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo(synthetic_raw, tmp_path_factory):
    """Prepared demo data and surrogate generated sets of two 'generators' for both task types."""
    from nvae_ecg.data import prepare
    from train_test.surrogate import write_surrogate

    root = tmp_path_factory.mktemp("bench")
    prep = root / "prepared"
    prepare.main(prepare.parse_args([str(synthetic_raw), str(prep), "--workers", "1"]))
    gen = root / "generated"
    for i, g in enumerate(("genA", "genB")):
        for task in ("imbalance", "addition"):
            write_surrogate(prep, gen / f"{g}_{task}", generator=g, task_type=task, seed=i)
    return prep, gen


def test_surrogate_sets_follow_the_shared_counts(demo):
    prep, gen = demo
    from train_test.data import train_labels

    sets = discover_generated(root=gen)
    assert set(sets) == {(g, t) for g in ("genA", "genB") for t in ("imbalance", "addition")}
    y = train_labels(prep)
    plan = enrichment_plan(y, "imbalance", 1.0, PRETRAIN)
    src = generated_source(sets[("genA", "imbalance")], plan, PRETRAIN, seed=0)
    assert len(src.rows) == sum(i.count for i in plan)
    np.testing.assert_array_equal(src.targets.sum(axis=1), 1)


def _common(prep, *extra):
    return ["--prepared_dir", str(prep), "--epochs", "1", "--arch", "tiny", "--seeds", "0", "--num_workers", "0",
            "--bootstrap", "20", "--device", "cpu", "--no_tensorboard", *extra]


def test_enrich_train_smoke_and_resume(demo, tmp_path):
    from train_test import enrich_train
    from train_test.report import build_report

    prep, gen = demo
    argv = _common(prep, "--generated_root", str(gen), "--proportions", "0.5", "1.0", "--out_dir", str(tmp_path))
    t0 = time.time()
    data = enrich_train.main(enrich_train.parse_args(argv))
    elapsed = time.time() - t0
    keys = set(data["cells"])
    assert len(keys) == 1 + 2 * 2 * 2  # baseline + 2 generators x 2 tasks x 2 proportions
    assert {"baseline|none|0|0", "genB|addition|0.5|0", "genA|imbalance|1|0"} <= keys
    cell = data["cells"]["genA|imbalance|1|0"]
    assert cell["n_generated"] == cell["generated_counts"]["MI"] > 0
    assert cell["n_train"] == cell["n_real"] + cell["n_generated"]
    half = data["cells"]["genA|imbalance|0.5|0"]["n_generated"]
    assert half == round(0.5 * cell["n_generated"]) or abs(2 * half - cell["n_generated"]) <= 1
    # Resume: drop one cell, rerun; only that cell is trained again, the others are left as they were.
    path = tmp_path / "enrich_train.json"
    stored = json.loads(path.read_text())
    kept = stored["cells"]["genB|addition|1|0"]
    del stored["cells"]["genA|addition|0.5|0"]
    path.write_text(json.dumps(stored))
    data = enrich_train.main(enrich_train.parse_args(argv))
    assert set(data["cells"]) == keys and data["cells"]["genB|addition|1|0"] == kept
    with pytest.raises(ValueError, match="other settings"):
        enrich_train.main(enrich_train.parse_args(argv + ["--lr", "0.5"]))
    md = build_report(tmp_path)["markdown"]
    assert "| n | genA | genB |" in md and "task `imbalance`" in md
    assert (tmp_path / "report" / "enrich_train_addition.png").stat().st_size > 1000
    print(f"\nenrich_train smoke (9 cells): {elapsed:.1f} s")


def test_enrich_pretrain_smoke(demo, tmp_path):
    from train_test import enrich_pretrain
    from train_test.report import build_report

    prep, gen = demo
    argv = _common(prep, "--generated", str(gen / "genA_imbalance"), str(gen / "genA_addition"), "--targets", "ningbo",
                   "--fractions", "0.5", "1.0", "--out_dir", str(tmp_path))
    t0 = time.time()
    data = enrich_pretrain.main(enrich_pretrain.parse_args(argv))
    elapsed = time.time() - t0
    assert set(data["cells"]) == {f"ningbo|{a}|{f}|0" for a in ("none|none|0", "real|none|0", "genA|imbalance|1")
                                  for f in ("0.5", "1")}
    assert set(data["pretrain"]) == {"real|none|0|0", "genA|imbalance|1|0"}  # once per arm, not per fraction
    assert data["pretrain"]["genA|imbalance|1|0"]["n_generated"] > 0
    assert "MI" not in data["pretrain"]["genA|imbalance|1|0"]["generated_counts"]
    ningbo = data["cells"]["ningbo|genA|imbalance|1|0.5|0"]["test"]["per_class"]
    assert list(ningbo) == ["SR", "LAD", "LVH", "STach", "IAVB", "SB", "TAb"]  # Ningbo: no AF
    ckpt = tmp_path / "pretrained" / "genA_imbalance_1_0.pt"
    assert ckpt.is_file()
    mtime = ckpt.stat().st_mtime_ns
    data = enrich_pretrain.main(enrich_pretrain.parse_args(argv))  # everything cached
    assert ckpt.stat().st_mtime_ns == mtime
    md = build_report(tmp_path)["markdown"]
    assert "Table VII (Ningbo)" in md and "| Class | No pretraining | PTB-XL (real) | genA |" in md
    assert (tmp_path / "report" / "enrich_pretrain_ningbo.png").stat().st_size > 1000
    print(f"\nenrich_pretrain smoke (6 cells, 2 pretrainings): {elapsed:.1f} s")


@pytest.mark.slow
def test_scripts_run_end_to_end(demo, tmp_path):
    prep, gen = demo
    env = {**os.environ, "PYTHON": sys.executable, "EPOCHS": "1", "SEEDS": "0", "ARCH": "tiny", "BOOTSTRAP": "20",
           "ADDITION_PROPORTIONS": "0.5 1.0", "IMBALANCE_PROPORTIONS": "0.5 1.0", "FRACTIONS": "0.5 1.0",
           "NUM_WORKERS": "0", "DEVICE": "cpu"}
    for script in ("enrich_train.sh", "enrich_pretrain.sh"):
        r = subprocess.run(["bash", str(REPO / "scripts" / script), str(prep), str(gen), str(tmp_path / "res")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "res" / "report" / "tables.md").read_text()
    assert "Training-set enrichment" in md and "Table VII (Ningbo)" in md

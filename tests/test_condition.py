"""cNVAE-ECG conditioned on demographics (--condition classes|demographics|both): the dataset's (x, y, c) items,
the vector reaching the decoder, refusals, train + bit-for-bit resume + generation with --age/--sex stored in
conditions.npy, a classes model refusing --age, and the quality report's demographic rows on a tiny case."""

import json

import numpy as np
import pytest
import torch

from nvae_ecg import generate, train
from nvae_ecg.config import get_config
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.demographics import fit_stats_prepared, records_conditions
from nvae_ecg.model import AutoEncoder
from nvae_ecg.samples import read_samples
from nvae_ecg.utils import slim_checkpoint

_C = torch.tensor([[-1.0, 0.0, 1.0, 0.0], [1.5, 0.0, 0.0, 1.0]])


def _model(condition: str) -> AutoEncoder:
    torch.manual_seed(0)
    return AutoEncoder(get_config("tiny", length=256, condition=condition)).eval()


def test_config_validates_condition():
    assert get_config("tiny").condition == "classes"
    with pytest.raises(ValueError, match="condition"):
        get_config("tiny", condition="age")


@pytest.mark.parametrize("condition", ["both", "demographics"])
@torch.no_grad()
def test_demographic_vector_reaches_decoder_and_encoder(condition):
    m = _model(condition)
    y = torch.eye(9)[:2]
    torch.manual_seed(1)
    a = m.sample_logits(y, 1.0, demographics=_C)
    torch.manual_seed(1)
    b = m.sample_logits(y, 1.0, demographics=_C.flip(0))
    torch.manual_seed(1)
    a2 = m.sample_logits(y, 1.0, demographics=_C)
    assert torch.equal(a, a2) and not torch.allclose(a, b)
    # The encoder path too: with the decoder's demographic term fixed, the posterior (KL) still depends on c.
    x = torch.rand(2, 8, 256)
    torch.manual_seed(2)
    ka = torch.stack(m(x, y, demographics=_C).kl_all).sum(0)
    torch.manual_seed(2)
    kb = torch.stack(m(x, y, demographics=_C.flip(0)).kl_all).sum(0)
    assert not torch.allclose(ka, kb)
    with pytest.raises(ValueError, match="pass demographics"):
        m.sample(y)
    with pytest.raises(ValueError, match="shape"):
        m.sample(y, demographics=_C[:, :3])
    if condition == "demographics":
        assert not hasattr(m, "class_features_table")  # the class table is not used


def test_classes_model_refuses_demographics_and_is_unchanged():
    m = _model("classes")
    assert m.demographics_to_top is None and not any("demographics" in k for k in m.state_dict())
    with pytest.raises(ValueError, match="trained without demographics"):
        m.sample(torch.eye(9)[:2], demographics=_C)
    with pytest.raises(ValueError, match="trained without demographics"):
        m(torch.rand(2, 8, 256), torch.eye(9)[:2], demographics=_C)


def test_dataset_yields_conditions_of_its_records(prepared_demo90):
    plain = GeneratorDataset(prepared_demo90, "ptb-xl", "val")
    assert len(plain[0]) == 2
    stats = fit_stats_prepared(prepared_demo90, "ptb-xl")
    ds = GeneratorDataset(prepared_demo90, "ptb-xl", "val", demographics=stats)
    x, y, c = ds[1]
    assert torch.equal(x, plain[1][0]) and torch.equal(y, plain[1][1])
    assert c.dtype == torch.float32 and c.shape == (4,)
    assert np.array_equal(c.numpy(), records_conditions(ds.records.iloc[[1]], stats)[0])


# ---- end to end: train, resume, generate -------------------------------------------------------------------------
def _train_args(prepared, root, save, *extra, condition="both"):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny",
        "--condition", condition, "--batch_size", "8", "--epochs", "1", "--max_steps", "4", "--num_workers", "0",
        "--seed", "5", "--log_every", "2", "--iw_samples", "2", "--max_val_batches", "1", "--sample_every", "0",
        "--save_every", "0", "--quality_every", "0", *extra])


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(prepared_demo90, tmp_path_factory):
    root = tmp_path_factory.mktemp("condition_runs")
    # The figures and the quality monitor sample with demographics too (on forked RNGs: the resume test below
    # compares this run with one that has neither).
    assert train.main(_train_args(prepared_demo90, root, "straight", "--quality_every", "4", "--quality_n", "1",
                                  "--sample_every", "1")) == 0
    return root


def test_both_trains_stores_stats_and_resumes_bit_for_bit(prepared_demo90, runs):
    ckpt = _ckpt(runs / "straight" / "checkpoints" / "latest.pt")
    assert ckpt["config"]["condition"] == "both" and ckpt["condition"] == "both"
    assert set(ckpt["demographics"]) >= {"age_mean", "age_std"} and 20 < ckpt["demographics"]["age_mean"] < 95
    assert any("demographics_to_top" in k for k in ckpt["model"])
    log = (runs / "straight" / "log.txt").read_text()
    assert "condition: both (age mean" in log and "quality" in log
    assert train.main(_train_args(prepared_demo90, runs, "cut", "--max_steps", "2")) == 0
    assert train.main(_train_args(prepared_demo90, runs, "cut", "--resume")) == 0
    b = _ckpt(runs / "cut" / "checkpoints" / "latest.pt")
    assert b["step"] == ckpt["step"] == 4
    for k in ckpt["model"]:
        assert torch.equal(ckpt["model"][k], b["model"][k]), k
    with pytest.raises(SystemExit, match="conditioned on both"):
        train.main(_train_args(prepared_demo90, runs, "cut", "--resume", condition="classes"))


def test_generate_with_fixed_and_drawn_demographics(prepared_demo90, runs, tmp_path):
    ckpt = runs / "straight" / "checkpoints" / "latest.pt"
    slim = tmp_path / "slim.pt"
    slim_checkpoint(ckpt, slim)  # the sampler-only copy keeps the statistics
    out = tmp_path / "af_70f"
    rc = generate.main(generate.parse_args([
        "--checkpoint", str(slim), "--task_type", "custom", "--labels", "AF", "--count", "3", "--age", "70",
        "--sex", "F", "--out_dir", str(out), "--device", "cpu", "--batch_size", "2"]))
    s = read_samples(out)
    assert rc == 0 and len(s) == 3 and s.conditions is not None
    assert np.all(s.conditions["age"] == 70) and np.all(s.conditions["sex"] == "F")
    assert s.meta["condition"] == "both" and s.meta["demographics"]["mode"] == "fixed"
    wf = tmp_path / "wfdb"
    assert generate.main(generate.parse_args([
        "--checkpoint", str(slim), "--task_type", "custom", "--labels", "AF", "--count", "1", "--age", "70",
        "--sex", "F", "--out_dir", str(wf), "--device", "cpu", "--format", "wfdb"])) == 0
    header = (wf / "G000001.hea").read_text()
    assert "# Age: 70" in header and "# Sex: Female" in header
    assert np.load(wf / "conditions.npy").tolist() == [(70.0, "F")]
    # Drawn (default): from the training split, jointly with the labels; needs --data_dir.
    with pytest.raises(SystemExit, match="--data_dir"):
        generate.main(generate.parse_args([
            "--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "SR", "--count", "2",
            "--out_dir", str(tmp_path / "x"), "--device", "cpu"]))
    out2 = tmp_path / "drawn"
    assert generate.main(generate.parse_args([
        "--checkpoint", str(ckpt), "--data_dir", str(prepared_demo90), "--task_type", "custom", "--labels", "SR",
        "--count", "4", "--sex", "M", "--out_dir", str(out2), "--device", "cpu"])) == 0
    c = read_samples(out2).conditions
    assert np.all(c["sex"] == "M") and np.all((c["age"] >= 0) & (c["age"] <= 120))
    assert json.loads((out2 / "meta.json").read_text())["demographics"]["mode"].startswith("drawn")


def test_classes_model_refuses_age(prepared_demo90, runs, tmp_path):
    assert train.main(_train_args(prepared_demo90, runs, "classes", "--max_steps", "1", condition="classes")) == 0
    ckpt = runs / "classes" / "checkpoints" / "latest.pt"
    assert "demographics" not in _ckpt(ckpt)
    with pytest.raises(SystemExit, match="trained without demographics"):
        generate.main(generate.parse_args([
            "--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "AF", "--count", "1", "--age", "70",
            "--out_dir", str(tmp_path / "refused"), "--device", "cpu"]))
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "plain"
    assert generate.main(generate.parse_args([
        "--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "AF", "--count", "1",
        "--out_dir", str(out), "--device", "cpu"])) == 0
    assert read_samples(out).conditions is None and not (out / "conditions.npy").exists()


# ---- the quality report's demographic rows -----------------------------------------------------------------------
def test_report_demographic_rows_on_a_tiny_case(prepared_demo90, tmp_path):
    from nvae_ecg.data.datasets import load_prepared, select_indices
    from nvae_ecg.demographics import record_demographics
    from nvae_ecg.samples import SampleWriter, make_conditions
    from train_test.quality import driver
    from train_test.quality.demographics import REFERENCE_ROW, demographic_report

    prep = load_prepared(prepared_demo90, "ptb-xl")
    rows = select_indices(prep, "train")[:12]
    ages, sexes = record_demographics(prep.records.iloc[rows])
    for name, cond in (("copies", make_conditions(ages, sexes)), ("plain", None)):
        with SampleWriter(tmp_path / name, len(rows)) as w:  # real ECGs "asked for" their own age/sex
            w.write(np.asarray(prep.signals[rows]), prep.labels[rows], conditions=cond)
            w.close({"generator": name})
    rep = demographic_report(prepared_demo90, "ptb-xl", {"copies": [str(tmp_path / "copies")],
                                                         "plain": [str(tmp_path / "plain")]},
                             arch="tiny", epochs=1, seed=0, max_train=40, max_eval=20)
    ref, copies, plain = rep["rows"]
    assert ref["name"] == REFERENCE_ROW and ref["kind"] == "reference" and ref["n_age"] > 0
    assert copies["sets_with_conditions"] == 1 and copies["n_age"] == np.isfinite(ages).sum()
    assert copies["age_mae"] is not None and copies["age_mae"] >= 0 and copies["age_mae_chance"] > 0
    assert plain["sets_with_conditions"] == 0 and "not conditioned" in plain["note"] and plain["age_mae"] is None
    assert copies["age_mae_shuffled"] is not None and plain["age_corr_shuffled"] is None
    assert rep["predictor"]["arch"] == "tiny" and rep["predictor"]["n_train"] == 40
    json.dumps(rep, allow_nan=False)  # strict JSON for quality.json
    a = driver.parse_args(["--real", "r", "--generated", "g", "--out_dir", "o", "--no_demographics"])
    assert a.no_demographics and a.demographics_arch is None and a.demographics_epochs is None


def test_label_only_control_shuffles_requests_within_label_sets():
    from train_test.quality.demographics import fidelity_with_control, shuffle_within_labels

    rng = np.random.default_rng(0)
    labels = np.repeat(np.eye(9, dtype=np.float32)[[0, 4]], 50, axis=0)  # 50 SR, then 50 AF
    age = np.concatenate([rng.uniform(20, 40, 50), rng.uniform(60, 90, 50)])
    sex = np.array(["M", "F"] * 50)
    sa, ss = shuffle_within_labels(age, sex, labels, np.random.default_rng(1))
    for rows in (slice(0, 50), slice(50, 100)):  # each label set keeps its own ages and sexes, reordered
        assert np.array_equal(np.sort(sa[rows]), np.sort(age[rows])) and not np.array_equal(sa[rows], age[rows])
        assert sorted(ss[rows]) == sorted(sex[rows])
    one_each = np.eye(100)  # every ECG its own label set: nothing to shuffle
    assert np.array_equal(shuffle_within_labels(age, sex, one_each, np.random.default_rng(1))[0], age)
    # A perfect predictor beats its control; the control keeps the between-class part of the correlation.
    p_male = (sex == "M").astype(float)
    row = fidelity_with_control(age, p_male, age, sex, labels, np.random.default_rng(2))
    assert row["age_corr"] == pytest.approx(1.0) and row["sex_auroc"] == 1.0
    assert 0.6 < row["age_corr_shuffled"] < 0.99 and 0.2 < row["sex_auroc_shuffled"] < 0.8
    assert row["age_mae_shuffled"] > row["age_mae"] == 0.0
    with pytest.raises(ValueError, match="one label row"):
        shuffle_within_labels(age, sex, labels[:10], rng)


def test_demographic_section_marks_scores_above_the_real_reference():
    from train_test.quality.markdown import demographics_markdown

    def row(name, kind, auroc, corr):
        return {"name": name, "kind": kind, "sets": 1, "sets_with_conditions": 1, "n_age": 10.0, "n_sex": 10.0,
                "sex_auroc": auroc, "sex_auroc_shuffled": 0.5, "age_mae": 9.0, "age_mae_shuffled": 12.0,
                "age_mae_chance": 12.0, "age_corr": corr, "age_corr_shuffled": 0.0}
    demo = {"predictor": {"arch": "tiny", "epochs": 1, "n_train": 10, "n_train_age": 10, "n_train_sex": 10},
            "rows": [row("real", "reference", 0.6, 0.4), row("flat", "generator", 0.9, 0.45),
                     row("none", "generator", None, None)]}
    lines = {ln.split("|")[1].strip(): ln for ln in demographics_markdown(demo) if ln.startswith("| ")}
    assert "0.9 (0.5) *above real*" in lines["flat"] and "0.45 (0) |" in lines["flat"]  # r within the margin
    assert "above real" not in lines["real"] and "n/a (0.5) |" in lines["none"]

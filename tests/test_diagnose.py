"""nvae_ecg.diagnose: the metric functions on planted signals, and the entry point on a tiny trained checkpoint."""

import json
import math

import pytest
import torch

from nvae_ecg import diagnose, train
from nvae_ecg.config import get_config
from nvae_ecg.distributions import DiscMixLogistic8
from nvae_ecg.model import AutoEncoder

TOP_KEYS = {"checkpoint", "epoch", "step", "dataset", "split", "n", "seed", "classes", "records", "labels",
            "num_groups", "figures", "reconstruction", "kl", "mixture", "gradients", "conditioning", "edges"}


@pytest.fixture(scope="module")
def checkpoint(prepared_ptbxl, tmp_path_factory):
    """A tiny cNVAE-ECG trained for 3 steps on the session's prepared demo PTB-XL data."""
    root = tmp_path_factory.mktemp("diag_runs")
    args = train.parse_args(["--data_dir", str(prepared_ptbxl), "--root", str(root), "--save", "tiny",
                             "--config", "tiny", "--batch_size", "4", "--epochs", "1", "--max_steps", "3",
                             "--num_workers", "0", "--seed", "5", "--iw_samples", "0", "--max_val_batches", "1",
                             "--sample_every", "0", "--save_every", "1", "--device", "cpu"])
    assert train.main(args) == 0
    path = root / "tiny" / "checkpoints" / "latest.pt"
    assert path.is_file()
    return path


def _run(checkpoint, prepared, out, *extra):
    return diagnose.main(diagnose.parse_args(["--checkpoint", str(checkpoint), "--data_dir", str(prepared),
                                              "--split", "all", "--n", "3", "--out_dir", str(out),
                                              "--device", "cpu", *extra]))


# ---- metric functions ---------------------------------------------------------------------------------------------
def test_perfect_reconstruction_has_correlation_one_and_zero_rmse():
    x = torch.rand(3, 8, 200, generator=torch.Generator().manual_seed(0))
    m = diagnose.reconstruction_metrics(x, x.clone())
    assert m["corr_median"] == pytest.approx(1.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-12) for row in m["corr_per_ecg_lead"] for v in row)
    assert m["rmse_mean"] == 0.0 and m["corr_undefined"] == 0
    # Affine copies correlate perfectly too; a sign flip gives -1; an offset shows only in the RMSE.
    assert diagnose.pearson_per_lead(x, 0.5 * x + 0.2).min() == pytest.approx(1.0, abs=1e-12)
    assert diagnose.pearson_per_lead(x, 1 - x).max() == pytest.approx(-1.0, abs=1e-12)
    assert diagnose.rmse_per_ecg(x, x + 0.1).tolist() == pytest.approx([0.1] * 3)


def test_flat_reconstruction_has_undefined_correlation_not_a_crash():
    x = torch.rand(2, 8, 50)
    flat = torch.full_like(x, 0.3)
    m = diagnose.reconstruction_metrics(x, flat)
    assert m["corr_median"] is None and m["corr_undefined"] == 16
    json.dumps(m, allow_nan=False)  # undefined correlations are null, not NaN


def test_edge_artefact_finds_a_jump_at_the_first_sample():
    x = torch.full((2, 8, 100), 0.2)
    recon = x.clone()
    recon[..., 0] = 0.6
    recon[..., 2:-2] += 0.01
    e = diagnose.edge_artefact(x, recon)
    assert e["first"] == pytest.approx(0.2) and e["last"] == pytest.approx(0.0)
    assert e["interior"] == pytest.approx(0.01) and e["ratio_first"] == pytest.approx(20.0)


def test_group_scales_follow_decoder_order():
    model = AutoEncoder(get_config("tiny", length=256))
    scales = diagnose.group_scales(model)
    assert len(scales) == model.num_groups and scales == sorted(scales) and scales[0] == 0
    post = diagnose.posterior_pass(model.eval(), torch.rand(2, 8, 256), torch.eye(9)[:2])
    kl = diagnose.kl_report(model, post)
    assert len(kl["groups"]) == model.num_groups
    # Higher scales (closer to the data) have longer latent maps.
    lengths = [g["latent_shape"][-1] for g in kl["groups"]]
    assert lengths == sorted(lengths) and lengths[0] == model.top_length


def test_conditioning_check_sees_a_class_code_and_its_absence():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", length=256)).eval()
    y = torch.eye(9)
    c = diagnose.conditioning_check(model, y[0], y[1], n=2, seed=3)
    same = diagnose.conditioning_check(model, y[0], y[0], n=2, seed=3)
    assert same["rel_diff"] == 0.0 and c["rel_diff"] > 0.0 and c["rel_diff_same_label"] > 0.0
    with torch.no_grad():
        model.class_features_table[1].copy_(model.class_features_table[0])  # class 1 now has class 0's code
    assert diagnose.conditioning_check(model, y[0], y[1], n=2, seed=3)["rel_diff"] == 0.0


def test_gradient_norms_cover_blocks_and_leave_the_model_unchanged():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", length=256)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = diagnose.gradient_norms(model, torch.rand(2, 8, 256), torch.eye(9)[:2])
    for name in ("stem", "pre_process", "enc_cells", "enc_sampler", "dec_sampler", "dec_cells", "post_process",
                 "output_layer", "class_features_table"):
        assert name in g["blocks"] and math.isfinite(g["blocks"][name]["nelbo"])
    assert g["blocks"]["output_layer"]["nelbo"] > 0 and g["blocks"]["output_layer"]["kl"] == 0.0
    assert not model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # BatchNorm running statistics put back
        assert torch.equal(v, before[k]), k


# ---- entry point ----------------------------------------------------------------------------------------------------
def test_diagnose_writes_json_figures_and_summary(checkpoint, prepared_ptbxl, tmp_path, capsys):
    out = tmp_path / "diag"
    assert _run(checkpoint, prepared_ptbxl, out) == 0
    report = json.loads((out / "diagnose.json").read_text())
    assert TOP_KEYS <= set(report)
    for name in report["figures"].values():
        assert (out / name).stat().st_size > 1000
    rec = report["reconstruction"]
    assert {"corr_median", "corr_per_ecg_lead", "rmse_mean", "rmse_posterior_sample", "prior",
            "corr_median_train_bn"} <= set(rec)
    corrs = [v for row in rec["corr_per_ecg_lead"] for v in row if v is not None]
    assert len(rec["corr_per_ecg_lead"]) == 3 and corrs and all(-1.0 <= v <= 1.0 for v in corrs)
    assert 0.0 <= rec["rmse_mean"] <= 1.0 and 0.0 <= rec["prior"]["rmse_mean"] <= 1.0
    num_groups = AutoEncoder(get_config("tiny", length=5000)).num_groups
    assert report["num_groups"] == num_groups and len(report["kl"]["groups"]) == num_groups
    assert 0 <= report["kl"]["active_units"] <= report["kl"]["units"]
    mix = report["mixture"]
    assert mix["available"] and sum(mix["scale_histogram"]["counts"]) == 3 * 8 * 2 * 5000
    assert 0.0 <= mix["weight_entropy_mean"] <= mix["weight_entropy_max"] + 1e-9
    assert {"stem", "dec_cells", "output_layer", "class_features_table"} <= set(report["gradients"]["blocks"])
    assert report["conditioning"]["rel_diff"] > 0.0
    assert report["edges"]["interior"] >= 0.0
    text = capsys.readouterr().out
    for word in ("median corr", "KL per group", "mixture scales", "gradients", "class conditioning", "edges"):
        assert word in text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_planted_perfect_reconstruction_reports_correlation_one(checkpoint, prepared_ptbxl, tmp_path, monkeypatch):
    """With the decoder mean replaced by the input itself, every correlation is 1 and the RMSE 0."""
    names = torch.load(checkpoint, map_location="cpu", weights_only=True)["classes"]
    x, _, _ = diagnose.load_batch(prepared_ptbxl, "ptb-xl", "all", names, 3, 0)  # the ECGs main picks (seed 0)
    real_mean = DiscMixLogistic8.mean

    def planted(self):
        m = real_mean(self)
        return x.clone() if m.shape == x.shape else m

    monkeypatch.setattr(DiscMixLogistic8, "mean", planted)
    out = tmp_path / "planted"
    assert _run(checkpoint, prepared_ptbxl, out) == 0
    rec = json.loads((out / "diagnose.json").read_text())["reconstruction"]
    assert rec["corr_median"] == pytest.approx(1.0, abs=1e-9) and rec["rmse_mean"] == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-9) for row in rec["corr_per_ecg_lead"] for v in row if v is not None)


def test_missing_checkpoint_or_data_is_a_clear_error(checkpoint, prepared_ptbxl, tmp_path):
    missing = tmp_path / "nope" / "latest.pt"
    with pytest.raises(SystemExit, match=f"checkpoint {missing} does not exist"):
        _run(missing, prepared_ptbxl, tmp_path / "o")
    with pytest.raises(SystemExit, match="does not exist"):
        _run(checkpoint, tmp_path / "no_data", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_every_flag_has_help():
    actions = [a for a in diagnose.build_parser()._actions if a.dest != "help"]
    assert actions and all(a.help for a in actions)

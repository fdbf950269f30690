"""Tests of the throughput benchmark (``nvae_ecg.bench`` and the workloads of ``pulse2pulse.bench`` and
``train_test.bench``), of the authors' operator structure (``nvae_ecg.reference_ops``) and of the fast path's
numerical equivalence.

The precision test trains the same tiny cNVAE-ECG from the same initial weights on the same demo
batches in float32 and in float64, with the latent noise drawn in float64 and cast (so both see
the same draws up to rounding), using the trainer's own ``compute_loss`` and ``apply_gradients``;
the NELBO of every step must agree to ``NELBO_RTOL``.

Example::

    pytest tests/test_throughput_bench.py -q
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nvae_ecg import bench, reference_ops
from nvae_ecg.config import get_config
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.model import AutoEncoder
from nvae_ecg.objectives import kl_balancer_coeff
from nvae_ecg.train import apply_gradients, compute_loss

#: Relative NELBO tolerance between float32 and float64 after a few Adamax steps (measured on CPU: 5e-8).
NELBO_RTOL = 1e-5


REPO = Path(__file__).resolve().parents[1]
SMALL_RUN = ["--steps", "1", "--warmup", "1", "--split_steps", "1", "--sample_batches", "1", "--batch_size", "2",
             "--device", "cpu"]


def _bench_args(*extra: str):
    return bench.parse_args([*SMALL_RUN, *extra])


def test_bench_cnvae_both_modes_json(tmp_path, prepared_ptbxl):
    out_json = tmp_path / "bench.json"
    args = _bench_args("--model", "cnvae", "--config", "tiny", "--length", "512", "--json", str(out_json),
                       "--data_dir", str(prepared_ptbxl), "--num_workers", "0", "--data_ecgs", "8",
                       "--modes", "fast", "float64", "original")
    out = bench.main(args)
    modes = [r["mode"] for r in out["results"]]
    assert modes == ["fast", "float64", "original"]
    fast, f64, orig = out["results"]
    # The authors' structure (per-layer weight normalisation, per-parameter optimiser) launches more operators.
    assert orig["dtype"] == "float64" and orig["ops_per_step"] > fast["ops_per_step"]
    assert "fast / original" in out["table"] and out["train_speedup_vs_original"] > 0
    assert fast["dtype"] == "float32" and f64["dtype"] == "float64"
    for r in out["results"]:
        assert r["train_ecg_per_s"] > 0 and r["sample_ecg_per_s"] > 0 and r["peak_mem_gib"] > 0
        assert r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["optimizer_ms"] > 0
        assert r["params"] == fast["params"]
        assert r["ops_per_step"] > 100  # forward + backward + optimiser of a deep network
        assert r["gflop_per_ecg"] > 0
    # Same graph in both precisions except the mixture likelihood's dtype-specific formulas (a few dozen ops).
    assert abs(fast["ops_per_step"] - f64["ops_per_step"]) <= 0.05 * f64["ops_per_step"]
    assert out["data"]["ecgs"] >= 8 and out["data"]["ecg_per_s"] > 0
    assert out["train_speedup"] == pytest.approx(fast["train_ecg_per_s"] / f64["train_ecg_per_s"])
    saved = json.loads(out_json.read_text())
    assert saved["results"][0]["mode"] == "fast" and "fast / float64" in saved["table"]
    assert saved["machine"]["torch"] == torch.__version__


@pytest.mark.parametrize("module,model,config", [("pulse2pulse.bench", "wavegan_star", "tiny"),
                                                  ("pulse2pulse.bench", "pulse2pulse", "tiny"),
                                                  ("train_test.bench", "xresnet1d101", "tiny")])
def test_bench_other_models_in_process(module, model, config):
    workloads = importlib.import_module(module)  # the package's own workload module on the core's harness
    extra = ["--n_critic", "1"] if module == "pulse2pulse.bench" else []
    args = workloads.parse_args([*SMALL_RUN, "--model", model, "--config", config, "--modes", "fast", "--no_isolate",
                                 *extra])
    out = workloads.main(args)
    (r,) = out["results"]
    assert r["train_ecg_per_s"] > 0 and r["params"] > 0
    if model == "xresnet1d101":
        assert np.isnan(r["sample_ecg_per_s"]) and r["backward_ms"] > 0
    else:  # a GAN step is critic + generator: no phase split, but a sampler
        assert np.isnan(r["forward_ms"]) and r["sample_ecg_per_s"] > 0


def test_bench_repeats_interleave_modes_and_report_the_median_run(monkeypatch):
    order = []
    fake_ms = {"fast": iter([300.0, 100.0, 200.0]), "float64": iter([600.0, 500.0, 400.0])}

    def fake_run(args, mode, benchmark=None):  # stands in for one fresh benchmark process
        order.append(mode)
        ms = next(fake_ms[mode])
        return {"mode": mode, "dtype": "x", "autocast": "none", "compile": "none", "train_ecg_per_s": 1000 / ms,
                "step_ms": ms, "forward_ms": 0.0, "backward_ms": 0.0, "optimizer_ms": 0.0,
                "sample_ecg_per_s": float("nan"), "peak_mem_gib": 1.0, "ops_per_step": 0, "gflop_per_ecg": 0.0}

    monkeypatch.setattr(bench, "run_isolated", fake_run)
    args = _bench_args("--model", "cnvae", "--config", "tiny", "--modes", "fast", "float64", "--repeats", "3")
    out = bench.main(args)
    assert order == ["fast", "float64"] * 3
    fast, f64 = out["results"]
    assert fast["step_ms"] == 200.0 and fast["step_ms_runs"] == [300.0, 100.0, 200.0]
    assert f64["step_ms"] == 500.0
    assert out["train_speedup"] == pytest.approx(500.0 / 200.0)
    # Per-repeat ratios pair neighbouring runs: 600/300, 500/100, 400/200.
    assert "fast / float64 per repeat: 2.00x, 5.00x, 2.00x (min 2.00x, median 2.00x)" in out["table"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])


def test_bench_rejects_bad_flags():
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "wavegan_star", "--modes", "original"])


def _train_nelbos(dtype: torch.dtype, state: dict, batches, cfg, monkeypatch, steps: int) -> list[float]:
    """NELBO per step of a few Adamax steps in the given dtype, with float64 latent noise cast to dtype."""
    real_randn = torch.randn

    def randn64(*size, dtype=None, **kw):  # same draws for both precisions, up to the final rounding
        return real_randn(*size, dtype=torch.float64, **kw).to(dtype or torch.get_default_dtype())

    monkeypatch.setattr(torch, "randn", randn64)
    torch.manual_seed(123)
    model = AutoEncoder(cfg)
    model.load_state_dict(state)
    model = model.to(dtype)
    opt = torch.optim.Adamax(model.parameters(), 1e-3, weight_decay=3e-4, eps=1e-3)
    alpha_i = kl_balancer_coeff(cfg.num_latent_scales, model.groups_per_scale)
    out = []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss, parts, _ = compute_loss(model, x.to(dtype), y.to(dtype), 0.5, alpha_i, 1e-2, kl_balance=True,
                                      spectral_regularization=True)
        loss.backward()
        apply_gradients(model, opt, None, 0.0)
        out.append(float(parts["nelbo"].detach()))
    monkeypatch.undo()
    return out


def test_float32_matches_float64_nelbo(prepared_ptbxl, monkeypatch):
    """The fast path (float32) trains the same model as the float64 mode: NELBO agrees step by step."""
    ds = GeneratorDataset(prepared_ptbxl, "ptb-xl", split="train", classes="all")
    length = 1000
    xs = torch.stack([torch.as_tensor(np.asarray(ds[i][0]))[..., :length] for i in range(8)]).double()
    ys = torch.stack([torch.as_tensor(np.asarray(ds[i][1])) for i in range(8)]).double()
    batches = [(xs[:4], ys[:4]), (xs[4:], ys[4:])]
    cfg = get_config("tiny", length=length, num_classes=ys.shape[1])
    torch.manual_seed(0)
    state = AutoEncoder(cfg).state_dict()
    n64 = _train_nelbos(torch.float64, state, batches, cfg, monkeypatch, steps=4)
    n32 = _train_nelbos(torch.float32, state, batches, cfg, monkeypatch, steps=4)
    assert all(np.isfinite(n64)) and n64[0] != n64[-1]  # training moved the model
    print("max relative NELBO difference", np.max(np.abs(np.subtract(n32, n64)) / np.abs(n64)))
    np.testing.assert_allclose(n32, n64, rtol=NELBO_RTOL)


def test_bench_reports_a_failing_mode():
    """A mode that fails in its own process is reported with its error instead of hanging the parent."""
    args = _bench_args("--model", "cnvae", "--config", "tiny", "--length", "256", "--modes", "fast", "float64")
    args.config = "no_such_config"  # fails inside each spawned mode, after argument parsing
    out = bench.main(args)
    assert out["results"] == [] and set(out["errors"]) == {"fast", "float64"}
    assert "no_such_config" in out["errors"]["float64"] and "FAILED" in out["table"]


@pytest.mark.slow
def test_compiled_cells_match_eager():
    """--compile cells (torch.compile of every residual cell) computes the same forward and gradients."""
    from nvae_ecg.train import compile_model

    cfg = get_config("tiny", length=256)
    torch.manual_seed(0)
    eager = AutoEncoder(cfg)
    compiled = AutoEncoder(cfg)
    compiled.load_state_dict(eager.state_dict())
    note = compile_model(compiled, "cells")
    assert "cells" in note
    x = torch.rand(3, 8, 256)
    y = torch.eye(cfg.num_classes)[:3]
    grads = []
    for m in (eager, compiled):
        torch.manual_seed(1)
        out = m(x, y)
        loss = out.logits.square().mean() + torch.stack(out.kl_all).mean()
        loss.backward()
        grads.append((out.logits.detach(), m.stem.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-3, atol=1e-5)


def test_per_layer_weight_norm_is_the_same_model():
    """The benchmark's 'original' structure (each conv normalises its own weight) computes what batching computes."""
    cfg = get_config("tiny", length=256)
    torch.manual_seed(0)
    model = AutoEncoder(cfg).double()
    x, y = torch.rand(2, 8, 256, dtype=torch.float64), torch.eye(cfg.num_classes, dtype=torch.float64)[:2]
    outs = []
    for batched in (True, False):
        model.batch_weight_norm = batched
        torch.manual_seed(1)
        outs.append(model(x, y).logits)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)


def test_authors_mixture_is_the_same_likelihood():
    """The authors'-structure likelihood timed by 'original' mode equals DiscMixLogistic8, edge bins included."""
    from nvae_ecg.distributions import DiscMixLogistic8

    torch.manual_seed(0)
    m, length = 3, 300
    x = torch.rand(2, 8, length, dtype=torch.float64)
    x[:, :, :10], x[:, :, 10:20] = 0.0, 1.0  # both open-ended edge bins
    # Scales near 1: every bin holds > 1e-5 of the mass, where both formulas are exact.
    param = 0.3 * torch.randn(2, 33 * m, length, dtype=torch.float64)
    ours = DiscMixLogistic8(param, m).log_prob(x)
    theirs = reference_ops.AuthorsMixture8(param, m).log_prob(x)
    torch.testing.assert_close(theirs, ours, rtol=1e-10, atol=1e-10)
    # Wider parameters reach bins of < 1e-5 mass, where the authors' mid-point-density fallback approximates.
    param = torch.randn(2, 33 * m, length, dtype=torch.float64)
    ours = DiscMixLogistic8(param, m).log_prob(x)
    theirs = reference_ops.AuthorsMixture8(param, m).log_prob(x)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="scaled to"):
        reference_ops.AuthorsMixture8(param, m).log_prob(x + 1.0)


def test_authors_structure_is_the_same_model():
    """use_authors_structure (original mode) changes the operators, not the loss or its gradients."""
    cfg = get_config("tiny", length=256)
    x, y = torch.rand(2, 8, 256, dtype=torch.float64), torch.eye(cfg.num_classes, dtype=torch.float64)[:2]
    alpha_i = kl_balancer_coeff(cfg.num_latent_scales, AutoEncoder(cfg).groups_per_scale, fun="square")
    losses, grads = [], []
    for authors in (False, True):
        torch.manual_seed(0)
        model = AutoEncoder(cfg).double()
        if authors:
            notes = reference_ops.use_authors_structure(model)
            assert notes and not model.batch_weight_norm
        torch.manual_seed(1)
        loss, _, _ = compute_loss(model, x, y, 0.5, alpha_i, 1e-2, kl_balance=True, spectral_regularization=True)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-7, atol=1e-9)


def test_authors_structure_sets_the_likelihood_hook():
    """original mode swaps the decoder likelihood through the model's ``likelihood`` hook, not by patching."""
    from nvae_ecg.distributions import DiscMixLogistic8

    cfg = get_config("tiny", length=256)
    model = AutoEncoder(cfg)
    logits = torch.zeros(1, 33 * cfg.num_mixture_dec, 256)
    assert model.likelihood is None and isinstance(model.decoder_output(logits), DiscMixLogistic8)
    reference_ops.use_authors_structure(model)
    assert "decoder_output" not in vars(model)
    assert isinstance(model.decoder_output(logits), reference_ops.AuthorsMixture8)


def _fake_install(root: Path) -> None:
    """A distribution on sys.path declaring pyproject.toml's benchmark entry points, as ``pip install -e .`` does."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][bench.ENTRY_POINT_GROUP]
    info = root / "bench_entry_points_test-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-entry-points-test\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{bench.ENTRY_POINT_GROUP}]\n"
                                           + "".join(f"{k} = {v}\n" for k, v in declared.items()))


def test_core_finds_the_packages_workloads_through_entry_points(tmp_path, monkeypatch):
    """python -m nvae_ecg.bench --model wavegan_star|pulse2pulse|xresnet1d101 finds the packages' declared workloads."""
    _fake_install(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    found, failed = bench.discover()
    assert not failed
    assert list(found)[:4] == ["cnvae", "wavegan_star", "pulse2pulse", "xresnet1d101"]
    assert found["wavegan_star"].build.__module__ == "pulse2pulse.bench"
    assert found["xresnet1d101"].build.__module__ == "train_test.bench"
    args = _bench_args("--model", "wavegan_star", "--config", "tiny", "--modes", "fast", "--no_isolate",
                       "--n_critic", "1", "--compile", "none")
    assert args.modes == ["fast"] and args.n_critic == 1
    assert _bench_args("--model", "xresnet1d101").modes == ["fast", "float64"]
    with pytest.raises(SystemExit):
        _bench_args("--model", "xresnet1d101", "--modes", "original")


def test_core_without_entry_points_names_the_way_out(monkeypatch, capsys):
    """Without the entry points (an uninstalled checkout) the core runs cnvae and explains the other models."""
    monkeypatch.setattr(bench, "declared_entry_points", lambda: [])
    assert list(bench.discover()[0]) == ["cnvae"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "wavegan_star"])
    assert bench.ENTRY_POINT_GROUP in capsys.readouterr().err


def _imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a source file, function-level ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package,forbidden", [("nvae_ecg", {"pulse2pulse", "train_test"}),
                                               ("pulse2pulse", {"train_test"}), ("train_test", {"pulse2pulse"})])
def test_every_import_points_down(package, forbidden):
    """The core imports nothing above it; the two packages above it do not import each other."""
    offenders = {str(f.relative_to(REPO)): sorted(_imported_packages(f) & forbidden)
                 for f in sorted((REPO / package).rglob("*.py"))}
    assert {f: names for f, names in offenders.items() if names} == {}

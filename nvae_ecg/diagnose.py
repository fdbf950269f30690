"""Diagnose a trained cNVAE-ECG checkpoint: does it reconstruct, use its latents, its class code and its mixture?

The model is rebuilt from the checkpoint exactly as :mod:`nvae_ecg.generate` does
(:func:`nvae_ecg.generate.load_model`) and ``--n`` ECGs of a prepared split (chosen
with ``--seed``) are passed through it in eval mode. Reported, in ``diagnose.json``
and as a compact text summary: reconstructions (decoder-mixture mean and a posterior
sample next to the input; median Pearson correlation per ECG and lead, RMSE in [0, 1]
units, and the same RMSE for the mean of an unconditional prior sample with the same
labels, the baseline of a reconstruction that ignores its input); the KL of every
latent group in nats per ECG (decoder order, with the latent scale and shape of the
group) and the active units; the distribution of the mixture's logistic scales and the
entropy of its weights; gradient norms per top-level block for one batch of the NELBO
at KL weight 1; whether the class code reaches the output (decoder means of prior
samples for two labels drawn with the same noise); and the edge artefact (mean
|decoder mean - input| at the first and last samples against the interior). Figures:
``reconstructions.png``, ``kl_groups.png`` and ``mixture_gradients.png``; every file
is written atomically. A 2-D (STFT) checkpoint gets the same report except the mixture
section, which its Gaussian decoder does not have.

Why one file above 500 lines: one report made of many small, independent probes (reconstruction, KL per group,
mixture, gradient norms per block, conditioning), each a short function, plus its Markdown writer and command line.

Example::

    python -m nvae_ecg.diagnose --checkpoint runs/demo/checkpoints/latest.pt --data_dir prepared \\
        --split val --n 8 --out_dir runs/demo/diagnose
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, resolve_classes
from nvae_ecg.data.datasets import SPLITS, GeneratorDataset
from nvae_ecg.distributions import LOG_SCALE_MIN, DiscMixLogistic8
from nvae_ecg.generate import batchnorm_state, load_batchnorm_state, load_model
from nvae_ecg.io import atomic_write_json
from nvae_ecg.leads import LEADS8
from nvae_ecg.model import AutoEncoder, VAEOutput
from nvae_ecg.objectives import num_active_units, reconstruction_loss
from nvae_ecg.run import resolve_device

#: Quantiles of the logistic scales reported (and printed: the inner five).
SCALE_QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)
#: Active-unit threshold in nats (NVAE's).
ACTIVE_THRESHOLD = 0.1
#: Figures written to --out_dir (key in diagnose.json's "figures" -> file name).
FIGURES = {"reconstructions": "reconstructions.png", "kl": "kl_groups.png",
           "mixture_gradients": "mixture_gradients.png"}


# ---- metrics of two signal batches -----------------------------------------------------------------------------
def pearson_per_lead(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over time per ECG and lead, (B, C) float64, of a and b (B, C, L); NaN where one is flat."""
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"pearson_per_lead expects two (B, C, L) tensors of one shape, got {a.shape} and {b.shape}")
    a = a.detach().double()
    b = b.detach().double()
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    r = (a * b).sum(-1) / den
    r = torch.where(den > 0, r, torch.full_like(r, float("nan")))
    return r.clamp(-1.0, 1.0)


def rmse_per_ecg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per ECG (B,) float64 over leads and time."""
    if a.shape != b.shape:
        raise ValueError(f"rmse_per_ecg expects tensors of one shape, got {a.shape} and {b.shape}")
    d = a.detach().double() - b.detach().double()
    return torch.sqrt((d * d).flatten(1).mean(dim=1))


def _nanmedian(t: torch.Tensor) -> Optional[float]:
    v = t[~torch.isnan(t)]
    return float(v.median()) if v.numel() else None


def reconstruction_metrics(x: torch.Tensor, recon: torch.Tensor, leads: Sequence[str] = LEADS8) -> dict:
    """Median correlation (over ECGs x leads, and per lead), the per-ECG/lead table, and RMSE of recon against x."""
    r = pearson_per_lead(x, recon)
    rmse = rmse_per_ecg(x, recon)
    return {"corr_median": _nanmedian(r),
            "corr_median_per_lead": {name: _nanmedian(r[:, i]) for i, name in enumerate(leads[: r.shape[1]])},
            "corr_undefined": int(torch.isnan(r).sum()),
            "corr_per_ecg_lead": [[None if math.isnan(v) else v for v in row] for row in r.tolist()],
            "rmse_mean": float(rmse.mean()), "rmse_per_ecg": rmse.tolist()}


def edge_artefact(x: torch.Tensor, recon: torch.Tensor, edge: int = 2) -> dict:
    """Mean |recon - x| over the first and last ``edge`` samples and over the interior, and their ratios."""
    if x.shape[-1] <= 2 * edge:
        raise ValueError(f"signals of {x.shape[-1]} samples have no interior beyond {edge} edge samples per side")
    d = (recon.detach().double() - x.detach().double()).abs()
    first, last = float(d[..., :edge].mean()), float(d[..., -edge:].mean())
    interior = float(d[..., edge:-edge].mean())
    ratio = (lambda v: v / interior if interior > 0 else None)
    return {"edge_samples": edge, "first": first, "last": last, "interior": interior,
            "ratio_first": ratio(first), "ratio_last": ratio(last),
            "mean_first_sample": float(recon[..., 0].double().mean()),
            "mean_interior": float(recon[..., edge:-edge].double().mean())}


# ---- model passes -----------------------------------------------------------------------------------------------
class PosteriorPass(NamedTuple):
    """One posterior pass: the model output, its decoder distribution, and each latent group's shape (decoder order)."""

    out: VAEOutput
    dist: object
    latent_shapes: list[tuple[int, ...]]


@torch.no_grad()
def posterior_pass(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor) -> PosteriorPass:
    """Encode x with classes y, sample the posterior and decode (in the model's current mode)."""
    shapes: list[tuple[int, ...]] = []
    # enc_sampler[j] produces group j's posterior parameters (decoder order): its output shape is the group's.
    hooks = [m.register_forward_hook(lambda _m, _i, o: shapes.append(tuple(o.shape[1:])))
             for m in model.enc_sampler]
    try:
        out = model(x, y)
    finally:
        for h in hooks:
            h.remove()
    latent = [(s[0] // 2,) + s[1:] for s in shapes]
    return PosteriorPass(out, model.decoder_output(out.logits), latent)


def group_scales(model: AutoEncoder) -> list[int]:
    """Latent scale of each group in decoder order: 0 is the top (lowest resolution), as ``forward`` visits them."""
    scales = []
    n = model.num_latent_scales
    for sc in range(n):
        scales += [sc] * model.groups_per_scale[n - sc - 1]
    return scales


def kl_report(model: AutoEncoder, post: PosteriorPass, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """KL per latent group in nats per ECG (decoder order) with scale, shape and active units, and their totals."""
    groups = []
    for j, (kl, diag, sc) in enumerate(zip(post.out.kl_all, post.out.kl_diag, group_scales(model))):
        shape = post.latent_shapes[j] if j < len(post.latent_shapes) else None
        nats = float(kl.double().mean())
        groups.append({"group": j, "scale": sc, "latent_shape": list(shape) if shape else None,
                       "kl_nats": nats,
                       "kl_per_latent": nats / math.prod(shape) if shape else None,
                       "active_units": num_active_units([diag], threshold), "units": int(diag.numel())})
    return {"groups": groups, "total_nats": sum(g["kl_nats"] for g in groups),
            "active_units": num_active_units(post.out.kl_diag, threshold),
            "units": sum(g["units"] for g in groups), "threshold": threshold}


def mixture_report(dist: object, num_bits: int) -> dict:
    """Logistic scales exp(log_scales) (data scale [-1, 1]) in quantiles and log10 bins; mixture weight entropy."""
    if not isinstance(dist, DiscMixLogistic8):
        return {"available": False, "reason": f"decoder is {type(dist).__name__}, not a logistic mixture"}
    log_s = dist.log_scales.detach().double()
    scales = torch.exp(log_s).flatten()
    qs = torch.quantile(scales if scales.numel() <= 2 ** 24 else scales[:: scales.numel() // 2 ** 24 + 1],
                        torch.tensor(SCALE_QUANTILES, dtype=torch.float64))
    edges = np.arange(-3.5, 1.01, 0.5)  # log10 of the scale; exp(-7) ~ 10^-3.04 is the clamp floor
    # counts[0]: below edges[0]; counts[-1]: above edges[-1]; counts[i]: in [edges[i-1], edges[i]).
    counts, _ = np.histogram(np.log10(scales.cpu().numpy()), bins=np.concatenate([[-np.inf], edges, [np.inf]]))
    probs = torch.softmax(dist.logit_probs.detach().double(), dim=1)               # B, M, L
    entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(dim=1)
    bin_width = 2.0 / (2 ** num_bits - 1)
    return {"available": True, "num_mix": int(dist.num_mix), "bin_width": bin_width,
            "scale_quantiles": {f"q{q:g}": float(v) for q, v in zip(SCALE_QUANTILES, qs)},
            "scale_median_in_bins": float(qs[SCALE_QUANTILES.index(0.5)]) / bin_width,
            "scale_histogram": {"log10_edges": edges.tolist(), "counts": counts.tolist()},
            "fraction_at_floor": float((log_s <= LOG_SCALE_MIN + 1e-6).double().mean()),
            "weight_entropy_mean": float(entropy.mean()), "weight_entropy_median": float(entropy.median()),
            "weight_entropy_max": math.log(dist.num_mix), "max_weight_mean": float(probs.amax(dim=1).mean())}


def parameter_blocks(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by top-level block: each child module and each parameter held by the model itself."""
    blocks = {name: [p] for name, p in model.named_parameters(recurse=False)}
    for name, child in model.named_children():
        params = list(child.parameters())
        if params:
            blocks[name] = params
    return blocks


def _norm(grads: Sequence[Optional[torch.Tensor]]) -> float:
    sq = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(sq)


def gradient_norms(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor, train_mode: bool = True) -> dict:
    """L2 gradient norms per top-level block of the batch-mean NELBO at KL weight 1, and of its two parts.

    ``train_mode`` (the default, as in training) uses batch statistics in BatchNorm; the running statistics it
    updates are put back afterwards, and the model's mode is restored.
    """
    was_training = model.training
    saved = batchnorm_state(model)
    model.train(train_mode)
    try:
        with torch.enable_grad():
            out = model(x, y, log_probs=False)
            recon = reconstruction_loss(model.decoder_output(out.logits), x).mean()
            kl = torch.stack(out.kl_all, dim=1).sum(dim=1).mean()
            blocks = parameter_blocks(model)
            names = list(blocks)
            flat = [p for n in names for p in blocks[n]]
            per_part = {}
            for part, loss in (("recon", recon), ("kl", kl)):
                per_part[part] = torch.autograd.grad(loss, flat, retain_graph=part == "recon", allow_unused=True)
    finally:
        load_batchnorm_state(model, saved)
        model.train(was_training)
    report, start = {}, 0
    total = {"nelbo": 0.0, "recon": 0.0, "kl": 0.0}
    for n in names:
        k = len(blocks[n])
        g_r, g_k = per_part["recon"][start:start + k], per_part["kl"][start:start + k]
        g_n = [None if a is None and b is None else (0 if a is None else a) + (0 if b is None else b)
               for a, b in zip(g_r, g_k)]
        entry = {"nelbo": _norm(g_n), "recon": _norm(g_r), "kl": _norm(g_k),
                 "param_norm": _norm([p.detach() for p in blocks[n]]), "params": sum(p.numel() for p in blocks[n])}
        for key in total:
            total[key] += entry[key] ** 2
        report[n] = entry
        start += k
    return {"train_mode_bn": train_mode, "loss": {"nelbo": float((recon + kl).detach()), "recon": float(recon.detach()),
                                                  "kl": float(kl.detach())},
            "total": {k: math.sqrt(v) for k, v in total.items()}, "blocks": report}


@torch.no_grad()
def prior_mean(model: AutoEncoder, y: torch.Tensor, seed: int, t: float = 1.0) -> torch.Tensor:
    """Decoder-mixture mean (B, 8, L) of latents drawn from the prior for classes y, with seeded noise."""
    with torch.random.fork_rng(devices=[y.device] if y.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.decoder_output(model.sample_logits(y, t)).mean()


def _ac_norm(m: torch.Tensor) -> torch.Tensor:
    """Norm per ECG of a signal batch around its per-lead time mean (the part that carries the waveform)."""
    return (m - m.mean(dim=-1, keepdim=True)).flatten(1).norm(dim=1)


@torch.no_grad()
def conditioning_check(model: AutoEncoder, label_a: torch.Tensor, label_b: torch.Tensor, n: int, seed: int) -> dict:
    """Whether the class code reaches the output: prior-sample decoder means for two labels with the same noise.

    ``rel_diff`` is ||mean_a - mean_b|| / ||mean_a - its per-lead time mean|| (medians over n noise draws);
    ``rel_diff_same_label`` the same for label a with two different noise draws, the reference: a class code that
    reaches the decoder changes the output on the order of the noise, one that does not changes it by ~0.
    """
    ya = label_a.reshape(1, -1).expand(n, -1).contiguous()
    yb = label_b.reshape(1, -1).expand(n, -1).contiguous()
    ma = prior_mean(model, ya, seed).double()
    mb = prior_mean(model, yb, seed).double()
    ma2 = prior_mean(model, ya, seed + 1).double()
    ref = _ac_norm(ma).clamp_min(1e-12)
    rel = (ma - mb).flatten(1).norm(dim=1) / ref
    rel_noise = (ma - ma2).flatten(1).norm(dim=1) / ref
    return {"rel_diff": float(rel.median()), "rel_diff_same_label": float(rel_noise.median()),
            "abs_diff_mean": float((ma - mb).abs().mean()), "n": n}


def default_pair(class_names: Sequence[str]) -> tuple[str, str]:
    """Two labels for the conditioning check: SR and AF when the model has both, else its first two classes."""
    if "SR" in class_names and "AF" in class_names:
        return "SR", "AF"
    if len(class_names) < 2:
        raise ValueError(f"the conditioning check needs two classes; the model has {list(class_names)}")
    return class_names[0], class_names[1]


def one_hot(name: str, class_names: Sequence[str], device: torch.device) -> torch.Tensor:
    """One-hot label over the model's classes."""
    if name not in class_names:
        raise ValueError(f"class {name!r} is not one of the model's classes {list(class_names)}")
    y = torch.zeros(len(class_names), device=device)
    y[list(class_names).index(name)] = 1.0
    return y


def diagnose(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str],
             seed: int = 0, pair: Optional[tuple[str, str]] = None) -> tuple[dict, dict]:
    """Every diagnostic for a batch x (B, 8, L) in [0, 1] with labels y; returns (report, tensors for the figures)."""
    model.eval()
    torch.manual_seed(seed)
    post = posterior_pass(model, x, y)
    mean = post.dist.mean()
    sample = post.dist.sample(1.0)
    prior = prior_mean(model, y, seed)
    rec = reconstruction_metrics(x, mean)
    rec["rmse_posterior_sample"] = float(rmse_per_ecg(x, sample).mean())
    prior_metrics = reconstruction_metrics(x, prior)
    rec["prior"] = {"rmse_mean": prior_metrics["rmse_mean"], "corr_median": prior_metrics["corr_median"]}
    # The same posterior pass with batch statistics in BatchNorm (the running statistics are put back).
    saved = batchnorm_state(model)
    model.train()
    try:
        torch.manual_seed(seed)
        mean_bn = posterior_pass(model, x, y).dist.mean()
    finally:
        load_batchnorm_state(model, saved)
        model.eval()
    rec["corr_median_train_bn"] = reconstruction_metrics(x, mean_bn)["corr_median"]
    pair = pair or default_pair(class_names)
    cond = conditioning_check(model, one_hot(pair[0], class_names, x.device), one_hot(pair[1], class_names, x.device),
                              n=x.shape[0], seed=seed)
    cond["labels"] = list(pair)
    torch.manual_seed(seed)
    report = {"reconstruction": rec, "kl": kl_report(model, post),
              "mixture": mixture_report(post.dist, model.cfg.num_x_bits),
              "gradients": gradient_norms(model, x, y), "conditioning": cond,
              "edges": edge_artefact(x, mean)}
    return report, {"x": x, "mean": mean, "sample": sample, "prior": prior}


# ---- figures ----------------------------------------------------------------------------------------------------
def plot_reconstructions(x: torch.Tensor, mean: torch.Tensor, sample: torch.Tensor, leads: Sequence[str],
                         titles: Sequence[str], fs: float = 500.0):
    """Rows: ECGs; columns: leads; input (black), posterior sample (grey) and decoder-mixture mean (red)."""
    import matplotlib.pyplot as plt

    idx = [LEADS8.index(name) for name in leads]
    n = x.shape[0]
    fig, axes = plt.subplots(n, len(idx), figsize=(5 * len(idx), 1.3 * n + 0.6), sharex=True, squeeze=False)
    t = np.arange(x.shape[-1]) / fs
    for r in range(n):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.plot(t, sample[r, i].cpu().numpy(), color="0.75", lw=0.3, alpha=0.7, label="posterior sample")
            ax.plot(t, x[r, i].cpu().numpy(), color="black", lw=0.6, label="input")
            ax.plot(t, mean[r, i].cpu().numpy(), color="tab:red", lw=0.6, label="mixture mean")
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(leads[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(titles[r], fontsize=6, rotation=0, ha="right", va="center")
    axes[0, -1].legend(loc="upper right", fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    fig.tight_layout()
    return fig


def plot_kl(kl: dict):
    """Bar chart of the KL per group (log scale), labelled with scale, latent shape and active units."""
    import matplotlib.pyplot as plt

    groups = kl["groups"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(groups) + 2), 3.4))
    vals = [max(g["kl_nats"], 1e-3) for g in groups]
    ax.bar(range(len(groups)), vals, color=[f"C{g['scale'] % 10}" for g in groups])
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"g{g['group']}\ns{g['scale']} {'x'.join(map(str, g['latent_shape'] or []))}\n"
                        f"{g['active_units']}/{g['units']} act." for g in groups], fontsize=6)
    ax.set_ylabel("KL (nats per ECG)")
    ax.set_title(f"KL per group (decoder order; s = scale, 0 = top; channels x length)\ntotal "
                 f"{kl['total_nats']:.1f} nats, {kl['active_units']}/{kl['units']} active units", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mixture_gradients(mixture: dict, gradients: dict):
    """Left: histogram of log10 logistic scales; right: gradient norm per block (NELBO, recon, KL)."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    if mixture.get("available"):
        edges = mixture["scale_histogram"]["log10_edges"]
        labels = [f"<{edges[0]:g}"] + [f"{lo:g}..{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])] + [f">{edges[-1]:g}"]
        a1.bar(range(len(labels)), mixture["scale_histogram"]["counts"], color="tab:blue")
        a1.set_xticks(range(len(labels)))
        a1.set_xticklabels(labels, rotation=60, fontsize=6)
        a1.set_title(f"log10 logistic scale; bin width {mixture['bin_width']:.4f}, weight entropy "
                     f"{mixture['weight_entropy_mean']:.2f}/{mixture['weight_entropy_max']:.2f}", fontsize=8)
    else:
        a1.text(0.5, 0.5, mixture.get("reason", "no mixture"), ha="center", va="center", fontsize=8)
    names = list(gradients["blocks"])
    w = 0.28
    for k, part in enumerate(("nelbo", "recon", "kl")):
        a2.bar(np.arange(len(names)) + (k - 1) * w, [gradients["blocks"][n][part] or np.nan for n in names], w,
               label=part)
    a2.set_yscale("log")
    a2.set_xticks(range(len(names)))
    a2.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
    a2.set_title("gradient norm per block (KL weight 1)", fontsize=8)
    a2.legend(fontsize=6)
    fig.tight_layout()
    return fig


# ---- command line -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="cNVAE-ECG checkpoint (RUN/checkpoints/latest.pt)")
    p.add_argument("--data_dir", required=True, help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="prepared dataset to read ECGs from (unset: the one the model was trained on)")
    p.add_argument("--split", default="val", choices=SPLITS, help="split the ECGs are drawn from")
    p.add_argument("--n", type=int, default=8, help="number of ECGs (one batch)")
    p.add_argument("--leads", default="I,V2,V5",
                   help="comma-separated leads (of I, III, V1..V6) drawn in the reconstruction figure")
    p.add_argument("--pair", default=None,
                   help="two classes for the conditioning check, e.g. SR,AF (unset: SR,AF or the first two classes)")
    p.add_argument("--out_dir", default=None,
                   help="output folder (unset: diagnose/ next to the checkpoint's checkpoints/ folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ECG choice and of every sampled noise")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    return args


def load_batch(data_dir, dataset: str, split: str, classes: Sequence[str], n: int, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n ECGs (x (n, 8, L), y (n, K)) of a prepared split, chosen by seed, and their record names."""
    ds = GeneratorDataset(data_dir, dataset, split=split, classes=",".join(classes))
    if len(ds) == 0:
        raise SystemExit(f"error: no labelled ECGs in {Path(data_dir) / dataset} split {split!r}")
    rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    xs, ys = zip(*(ds[int(i)] for i in rows))
    rec = ds.records
    names = [str(rec.iloc[int(i)]["record"]) if "record" in rec.columns else f"row {int(ds.indices[i])}"
             for i in rows]
    return torch.stack(xs), torch.stack(ys), names


def summary_lines(report: dict) -> list[str]:
    """The compact text summary of a report."""
    f = (lambda v, fmt=".3f": "n/a" if v is None else format(v, fmt))
    r, kl, mix, g, c, e = (report[k] for k in ("reconstruction", "kl", "mixture", "gradients", "conditioning", "edges"))
    lines = [f"diagnose: {report['checkpoint']} (epoch {report.get('epoch')}, step {report.get('step')}), "
             f"{report['dataset']}/{report['split']}, {report['n']} ECGs",
             f"reconstruction: median corr {f(r['corr_median'])} (train-mode BN {f(r['corr_median_train_bn'])}), "
             f"RMSE {f(r['rmse_mean'], '.4f')} (posterior sample {f(r['rmse_posterior_sample'], '.4f')}); "
             f"prior sample, same labels: RMSE {f(r['prior']['rmse_mean'], '.4f')}, "
             f"corr {f(r['prior']['corr_median'])}",
             "KL per group (nats/ECG, decoder order): " + " | ".join(
                 f"s{gr['scale']}[{'x'.join(map(str, gr['latent_shape'] or []))}] {gr['kl_nats']:.1f}"
                 for gr in kl["groups"]) + f"; total {kl['total_nats']:.1f}, active units {kl['active_units']}/"
             f"{kl['units']}"]
    if mix.get("available"):
        q = mix["scale_quantiles"]
        lines.append("mixture scales q1/10/50/90/99%: " + " ".join(f"{q[k]:.4f}" for k in
                                                                     ("q0.01", "q0.1", "q0.5", "q0.9", "q0.99"))
                     + f" (bin {mix['bin_width']:.4f}, {100 * mix['fraction_at_floor']:.1f}% at floor); "
                     f"weight entropy {mix['weight_entropy_mean']:.2f} of max {mix['weight_entropy_max']:.2f} nats")
    else:
        lines.append(f"mixture: {mix['reason']}")
    lines.append(f"gradients (NELBO {g['loss']['nelbo']:.0f} = recon {g['loss']['recon']:.0f} + KL "
                 f"{g['loss']['kl']:.0f}): total {g['total']['nelbo']:.3g}; " + ", ".join(
                     f"{n} {b['nelbo']:.2g}" for n, b in g["blocks"].items()))
    lines.append(f"class conditioning ({c['labels'][0]} vs {c['labels'][1]}, same noise): rel. diff "
                 f"{c['rel_diff']:.3g} (same label, other noise: {c['rel_diff_same_label']:.3g})")
    lines.append(f"edges: |mean - x| first {e['edge_samples']} {e['first']:.4f}, last {e['last']:.4f}, interior "
                 f"{e['interior']:.4f} (x{f(e['ratio_first'], '.1f')}, x{f(e['ratio_last'], '.1f')})")
    return lines


def main(args: argparse.Namespace) -> int:
    """Load the checkpoint and the ECGs, run every diagnostic, write the JSON and figures, print the summary."""
    from nvae_ecg.plot import save_figure

    ckpt_path = Path(args.checkpoint)
    if not ckpt_path.is_file():
        raise SystemExit(f"error: checkpoint {ckpt_path} does not exist")
    device = resolve_device(args.device)
    model, ckpt, _ = load_model(ckpt_path, device)
    class_names = [CLASS_ABBREVS[i] for i in resolve_classes(ckpt["classes"])]
    dataset = args.dataset or ckpt.get("dataset") or "ptb-xl"
    try:
        x, y, names = load_batch(args.data_dir, dataset, args.split, class_names, args.n, args.seed)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from e
    x, y = x.to(device), y.to(device)
    pair = tuple(args.pair.split(",")) if args.pair else None
    if pair is not None and len(pair) != 2:
        raise SystemExit(f"error: --pair needs two comma-separated classes, got {args.pair!r}")
    leads = [s.strip() for s in args.leads.split(",") if s.strip()]
    unknown = [s for s in leads if s not in LEADS8]
    if unknown:
        raise SystemExit(f"error: --leads {unknown} not among the modelled leads {list(LEADS8)}")
    try:
        report, tensors = diagnose(model, x, y, class_names, seed=args.seed, pair=pair)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    out_dir = Path(args.out_dir) if args.out_dir else ckpt_path.resolve().parent.parent / "diagnose"
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = [f"{nm}\n{','.join(c for c, v in zip(class_names, row) if v > 0)}" for nm, row in zip(names, y.tolist())]
    save_figure(plot_reconstructions(*(tensors[k].cpu() for k in ("x", "mean", "sample")), leads, titles),
                out_dir / FIGURES["reconstructions"])
    save_figure(plot_kl(report["kl"]), out_dir / FIGURES["kl"])
    save_figure(plot_mixture_gradients(report["mixture"], report["gradients"]), out_dir / FIGURES["mixture_gradients"])
    report = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
              "data_dir": str(args.data_dir), "dataset": dataset, "split": args.split, "n": int(x.shape[0]),
              "seed": args.seed, "classes": class_names, "records": names, "labels": y.tolist(),
              "num_groups": model.num_groups, "leads_plotted": leads, "figures": dict(FIGURES), **report}
    atomic_write_json(out_dir / "diagnose.json", report)
    print("\n".join(summary_lines(report)))
    print(f"wrote {out_dir / 'diagnose.json'} and {', '.join(FIGURES.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))

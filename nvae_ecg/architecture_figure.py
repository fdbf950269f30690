"""Draw the cNVAE-ECG architecture (boxes and arrows, matplotlib) with the shapes of a model configuration.

The figure follows the data path of :class:`nvae_ecg.model.AutoEncoder` (NVAE
Fig. 2 in 1-D, paper Sec. III): 8-lead input -> stem (+ class code) ->
pre-process -> bottom-up encoder tower over the latent scales -> top-down decoder
tower started from the class-conditioned top feature map h = sum_k y_k H_k, whose
latent groups each have a prior sampler, an encoder combiner feeding a posterior
sampler, and a decoder combiner -> post-process -> 8-lead coupled discretised
logistic mixture -> 8 -> 12 lead algebra. Channel counts, lengths and group
counts are computed from the chosen configuration (``nvae_ecg.config``), so the
figure stays true to the code. Used for ``img/cnvae_architecture.png`` in the README.

Example::

    python -m nvae_ecg.architecture_figure --config paper --out img/cnvae_architecture.png
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from nvae_ecg.config import CONFIGS, ModelConfig, get_config  # noqa: E402
from nvae_ecg.distributions import PARAMS_PER_MIXTURE  # noqa: E402
from nvae_ecg.model import groups_per_scale  # noqa: E402
from nvae_ecg.neural_operations import CHANNEL_MULT  # noqa: E402
from nvae_ecg.plot import save_figure  # noqa: E402

ENC_COLOR = "#dbe9f6"
DEC_COLOR = "#fde3cf"
LAT_COLOR = "#e2f0d9"
IO_COLOR = "#eeeeee"
CLS_COLOR = "#f6d7e8"


@dataclass
class Shapes:
    """Channel counts, lengths and groups per scale of a configuration (encoder order: high to low resolution)."""

    padded: int
    pre_channels: int
    pre_length: int
    scale_channels: list
    scale_lengths: list
    groups: list
    top_channels: int
    top_length: int


def shapes(cfg: ModelConfig) -> Shapes:
    """The tensor shapes along the network, computed as AutoEncoder builds it (1-D configurations only)."""
    if cfg.ndim != 1:
        raise ValueError(f"the architecture figure draws the 1-D model; got representation={cfg.representation!r}")
    pre = cfg.num_preprocess_blocks
    padded = cfg.padded_length
    ch = [cfg.num_channels_enc * CHANNEL_MULT ** (pre + s) for s in range(cfg.num_latent_scales)]
    ln = [padded // 2 ** (pre + s) for s in range(cfg.num_latent_scales)]
    gps = groups_per_scale(cfg.num_latent_scales, cfg.num_groups_per_scale, cfg.ada_groups, cfg.min_groups_per_scale)
    top_c = cfg.num_channels_dec * CHANNEL_MULT ** (pre + cfg.num_latent_scales - 1)
    return Shapes(padded, ch[0], ln[0], ch, ln, gps, top_c, padded // cfg.total_downsampling)


_PT_PER_UNIT = 6.8  # points per data unit (set by draw_architecture from the figure size)


def _box(ax, x, y, w, h, text, color, fontsize=8.0, bold_first=True):
    """Rounded box with centred lines of text, the first one bold; returns (x, y, w, h)."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.0,rounding_size=0.6", fc=color, ec="#444444",
                                lw=0.9))
    lines = text.split("\n")
    dy = 1.3 * fontsize / _PT_PER_UNIT
    top = y + h / 2 + dy * (len(lines) - 1) / 2
    for i, line in enumerate(lines):
        ax.text(x + w / 2, top - i * dy, line, ha="center", va="center", fontsize=fontsize if i else fontsize + 0.3,
                fontweight="bold" if (i == 0 and bold_first) else "normal")
    return (x, y, w, h)


def _arrow(ax, p, q, color="#333333", ls="-", lw=1.1, rad=0.0, label=None, label_pos=0.5, fontsize=7.5,
           label_dx=0.0, label_dy=0.6):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=10, color=color, lw=lw, ls=ls,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1))
    if label:
        mx, my = p[0] + label_pos * (q[0] - p[0]), p[1] + label_pos * (q[1] - p[1])
        ax.text(mx + label_dx, my + label_dy, label, ha="center", va="bottom", fontsize=fontsize, color=color,
                style="italic")


def _top(b, frac=0.5):
    return (b[0] + frac * b[2], b[1] + b[3])


def _bottom(b, frac=0.5):
    return (b[0] + frac * b[2], b[1])


def _left(b, frac=0.5):
    return (b[0], b[1] + frac * b[3])


def _right(b, frac=0.5):
    return (b[0] + b[2], b[1] + frac * b[3])


def draw_architecture(cfg: ModelConfig, title: str | None = None) -> plt.Figure:
    """Figure of the cNVAE-ECG network for ``cfg`` (see the module docstring)."""
    global _PT_PER_UNIT
    sh = shapes(cfg)
    n_sc = cfg.num_latent_scales
    k = cfg.num_classes
    width, height, y_max = 19.5, 10.5, 105.0
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.95))
    ax.set_xlim(0, 158)
    ax.set_ylim(0, y_max)
    ax.set_axis_off()
    _PT_PER_UNIT = height * 0.95 * 72 / y_max
    cells_enc, cells_dec = cfg.num_cell_per_cond_enc, cfg.num_cell_per_cond_dec
    pre_b, pre_c = cfg.num_preprocess_blocks, cfg.num_preprocess_cells
    post_b, post_c = cfg.num_postprocess_blocks, cfg.num_postprocess_cells
    ex, ew = 2, 40        # encoder column
    cx, cw = 45, 16       # corridor between the towers (class code for the encoder)
    dx, dw = 64, 44       # decoder column
    gx, gw = 116, 40      # one latent group in detail; the lead algebra below it
    row_h, row_gap = 7.5, 4.5
    scale_y = [38 + s * (row_h + row_gap) for s in range(n_sc)]  # encoder scale s and its decoder scale share a row

    # ---- encoder (left column, bottom-up) ----------------------------------------------------------------------
    x_in = _box(ax, ex, 2, ew, 6.5, f"input x: 8 leads (I, III, V1-V6) x {cfg.length} samples\n"
                f"scaled to [0, 1] by the training bounds; -> [-1, 1], padded to {sh.padded}", IO_COLOR)
    stem = _box(ax, ex, 12, ew, 6.5, f"stem\nconv k3: 8 -> {cfg.num_channels_enc} channels, length {sh.padded}",
                ENC_COLOR)
    pre = _box(ax, ex, 22.5, ew, 9, f"pre-process: {pre_b} blocks x {pre_c} cells\n"
               f"per block: {pre_c - 1} residual cell(s), then a down cell\n(x2 channels, /2 length)"
               f" -> {sh.pre_channels} ch x {sh.pre_length}", ENC_COLOR)
    _arrow(ax, _top(x_in), _bottom(stem))
    _arrow(ax, _top(stem), _bottom(pre))
    enc_boxes = []
    for s in range(n_sc):
        b = _box(ax, ex, scale_y[s], ew, row_h, f"encoder scale {s + 1}: {sh.groups[s]} group(s)\n"
                 f"{cells_enc} residual cell(s) per group\n{sh.scale_channels[s]} ch x {sh.scale_lengths[s]}",
                 ENC_COLOR)
        _arrow(ax, _top(enc_boxes[-1]) if enc_boxes else _top(pre), _bottom(b),
               label="down cell" if enc_boxes else None, label_dx=4.0, label_dy=-0.9)
        enc_boxes.append(b)
    y = scale_y[-1] + row_h + row_gap
    enc0 = _box(ax, ex, y, ew, 6, "enc0\nELU, 1x1 conv, ELU", ENC_COLOR)
    _arrow(ax, _top(enc_boxes[-1]), _bottom(enc0))
    q_top = _box(ax, ex, y + 10.5, ew, 6.5, f"top posterior sampler\nconv k3 -> q(z_1 | x), "
                 f"{cfg.num_latent_per_group} ch x {sh.top_length}", LAT_COLOR)
    _arrow(ax, _top(enc0), _bottom(q_top))
    ax.text(ex + ew / 2, 101, "bottom-up encoder (training only)", ha="center", fontsize=12, fontweight="bold",
            color="#1f4e79")

    # ---- decoder (middle column, top-down) ----------------------------------------------------------------------
    y_lab = _box(ax, dx, 91, dw, 7, f"class labels y: {k}-dim multi-hot\n(SR, MI, LAD, LVH, AF, STach, IAVB, SB, "
                 "TAb)", CLS_COLOR)
    h_box = _box(ax, dx, 78.5, dw, 8.5, f"class-conditioned top feature map\nh = sum_k y_k H_k, H: {k} learned maps "
                 f"of {sh.top_channels} ch x {sh.top_length}\n(NVAE's prior_ftr0, one per class)", CLS_COLOR)
    _arrow(ax, _bottom(y_lab), _top(h_box))
    dec_boxes = {}
    for s in reversed(range(n_sc)):
        top = s == n_sc - 1
        b = _box(ax, dx, scale_y[s], dw, row_h, f"decoder scale {s + 1}: {sh.groups[s]} group(s)\n"
                 f"per group: {cells_dec} residual cell(s), prior sampler, combiners\n"
                 f"{sh.scale_channels[s]} ch x {sh.scale_lengths[s]}; z_l: {cfg.num_latent_per_group} ch x "
                 f"{sh.scale_lengths[s]}" + ("; z_1 ~ N(0, I)" if top else ""), DEC_COLOR, fontsize=7.8)
        if top:
            _arrow(ax, _bottom(h_box), _top(b), label="s = h", label_dx=3.0, label_dy=-0.9)
        else:
            _arrow(ax, _bottom(dec_boxes[s + 1]), _top(b), label="up cell", label_dx=4.0, label_dy=-0.9)
        dec_boxes[s] = b
        # Encoder features of this scale feed the encoder combiners of the decoder groups at the same scale.
        _arrow(ax, _right(enc_boxes[s], 0.5), _left(b, 0.5), color="#1f4e79", ls="--", lw=1.0,
               label="encoder features" if s == 0 else None, label_pos=0.5, label_dy=-2.6)
    _arrow(ax, _right(q_top), _left(dec_boxes[n_sc - 1], 0.85), color="#2e7d32", lw=1.0, label="z_1 (training)",
           label_pos=0.35, label_dy=0.2)
    post = _box(ax, dx, scale_y[0] - 12.5, dw, 9, f"post-process: {post_b} blocks x {post_c} cells\n"
                f"per block: an up cell (/2 channels, x2 length),\nthen {post_c - 1} residual cell(s)"
                f" -> {cfg.num_channels_dec} ch x {sh.padded}", DEC_COLOR, fontsize=7.8)
    _arrow(ax, _bottom(dec_boxes[0]), _top(post))
    out = _box(ax, dx, post[1] - 10.5, dw, 7, f"output layer\nELU, conv k3 -> {cfg.num_mixture_dec} x "
               f"{PARAMS_PER_MIXTURE} parameters per sample\ncropped to {cfg.length} samples", DEC_COLOR, fontsize=7.8)
    _arrow(ax, _bottom(post), _top(out))
    mix = _box(ax, dx, 2, dw, out[1] - 5, "8-lead coupled discretised logistic mixture\n"
               f"{cfg.num_mixture_dec} components: weight, 8 means, 8 scales, 16 couplings\n"
               f"(mean of III shifted by I, of V_k by V_1..V_k-1); 2^{cfg.num_x_bits} bins", LAT_COLOR, fontsize=7.8)
    _arrow(ax, _bottom(out), _top(mix))
    ax.text(dx + dw / 2, 101, "top-down decoder (training and generation)", ha="center", fontsize=12,
            fontweight="bold", color="#9c4a00")

    # ---- class code for the encoder (corridor) -------------------------------------------------------------------
    emb = _box(ax, cx, 12, cw, 6.5, "class code\nmean of h, 1x1 conv", CLS_COLOR, fontsize=7.3)
    xv = cx + cw / 2
    ax.plot([dx, xv, xv], [h_box[1] + 1.5, h_box[1] + 1.5, emb[1] + emb[3] + 1.2], color="#a0306e", lw=1.0,
            ls=(0, (4, 2)))
    _arrow(ax, (xv, emb[1] + emb[3] + 1.3), _top(emb), color="#a0306e", lw=1.0)
    _arrow(ax, _left(emb), _right(stem), color="#a0306e", label="added", label_dy=0.3)

    # ---- one latent group in detail (right) ---------------------------------------------------------------------
    gy0, gy1 = 33, 99
    ax.add_patch(FancyBboxPatch((gx - 1, gy0), gw + 2, gy1 - gy0, boxstyle="round,pad=0.0,rounding_size=1.0",
                                fc="#fbfbfb", ec="#888888", lw=0.9, ls="--"))
    ax.text(gx + gw / 2, gy1 - 3, "one latent group l > 1 (any decoder scale)", ha="center", fontsize=10,
            fontweight="bold")
    zoom = dec_boxes[min(1, n_sc - 1)]
    for f, yy in ((1.0, gy1), (0.0, gy0)):
        ax.plot([zoom[0] + zoom[2], gx - 1], [zoom[1] + f * zoom[3], yy], color="#aaaaaa", lw=0.7, ls=":")
    g_in = _box(ax, gx + 8, 86, 24, 5, "decoder state s\n(from group l - 1)", "white", fontsize=7.5)
    g_cells = _box(ax, gx + 8, 77, 24, 5.5, f"{cells_dec} residual cell(s)", DEC_COLOR, fontsize=7.8)
    g_prior = _box(ax, gx, 64, 18, 7, "prior sampler\nELU, 1x1 conv\n-> p(z_l | z_<l)", LAT_COLOR, fontsize=7.5)
    g_enc = _box(ax, gx + 22, 64, 18, 7, "encoder combiner\nencoder feature of the\nscale + 1x1 conv(s)",
                 ENC_COLOR, fontsize=7.5)
    g_post = _box(ax, gx + 22, 52, 18, 8, "posterior sampler\nconv k3 -> q(z_l | x, z_<l)\n"
                  + ("residual: mu_p + dmu,\nsigma_p x dsigma" if cfg.res_dist else "direct"), LAT_COLOR,
                  fontsize=7.2)
    g_z = _box(ax, gx + 2, 44, 36, 4.5, "z_l: sample of q (training) or of p with temperature t (generation)",
               "white", fontsize=7.0, bold_first=False)
    g_dec = _box(ax, gx + 8, 35, 24, 6, "decoder combiner\nconcat(s, z_l), 1x1 conv -> s", DEC_COLOR,
                 fontsize=7.5)
    _arrow(ax, _bottom(g_in), _top(g_cells))
    _arrow(ax, _bottom(g_cells, 0.3), _top(g_prior))
    _arrow(ax, _bottom(g_cells, 0.7), _top(g_enc))
    _arrow(ax, _bottom(g_enc), _top(g_post))
    _arrow(ax, _right(g_prior, 0.3), _left(g_post, 0.75), ls=":", lw=0.8, color="#2e7d32")
    ax.text(gx + 15.5, 58.5, "KL(q || p)", ha="center", fontsize=7.5, style="italic", color="#2e7d32")
    _arrow(ax, _bottom(g_prior), _top(g_z, 0.2))
    _arrow(ax, _bottom(g_post), _top(g_z, 0.85))
    _arrow(ax, _bottom(g_z), _top(g_dec))

    # ---- lead algebra (right, bottom) ----------------------------------------------------------------------------
    alg = _box(ax, gx, 2, gw, 15, "8 -> 12 lead algebra (exact)\nII = I + III\naVR = -(I + II) / 2,  "
               "aVL = (I - III) / 2\naVF = (II + III) / 2\n-> 12-lead ECG, 10 s at 500 Hz, in mV", IO_COLOR,
               fontsize=8)
    _arrow(ax, _right(mix), _left(alg, mix[3] / 2 / alg[3]), label="x ~ p(x | z)", label_dy=0.3)
    if title:
        fig.suptitle(title, fontsize=14, y=0.985)
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m nvae_ecg.architecture_figure", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # The figure draws the 1-D network; the 2-D presets (representation "stft") have the same layout on (F, T) grids.
    p.add_argument("--config", default="paper", choices=sorted(n for n, c in CONFIGS.items() if c.ndim == 1),
                   help="model configuration to draw (1-D presets)")
    p.add_argument("--out", default="img/cnvae_architecture.png", help="output image (.png, .svg or .pdf)")
    p.add_argument("--dpi", type=int, default=130, help="resolution of a PNG")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> Path:
    """Draw the figure for ``--config`` and write it atomically to ``--out``."""
    cfg = get_config(args.config)
    fig = draw_architecture(cfg, title=f"cNVAE-ECG (configuration '{args.config}'): conditional 1-D NVAE for "
                                       "8-lead ECGs")
    out = save_figure(fig, args.out, dpi=args.dpi)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(parse_args())

"""The quality report's driver: :func:`evaluate` runs every stage and writes OUT; :func:`main` is the command line.

``python -m train_test.evaluate_quality --data_dir PREPARED_DIR --generated GEN_DIR [GEN_DIR ...] --out_dir OUT``
compares every generator (its generated-sample folders, grouped by the ``generator`` field of their ``meta.json``)
with the real data of one prepared dataset: sources first (:mod:`~train_test.quality.sources`, so a bad folder fails
before any training), physiology in ``--physiology_workers`` processes (:mod:`~train_test.quality.physiology`), the
real-data classifier trained or reused (:mod:`~train_test.quality.features`), features, memorisation distances,
TSTR, the comparisons (:mod:`~train_test.quality.compare`) against the reference row "real: train vs. test", the
figures (:mod:`~train_test.quality.plots`), the demographic fidelity (:mod:`~train_test.quality.demographics`, skipped
with ``--no_demographics``), then ``quality.json`` and ``quality.md`` (:mod:`~train_test.quality.markdown`);
the metrics and the report are described in :mod:`train_test.quality`.

Example::

    python -m train_test.evaluate_quality --data_dir data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.io import atomic_write_json, atomic_write_text
from nvae_ecg.plot import save_figure
from train_test.archs import ARCH_NAMES
from train_test.classifier import TrainConfig, add_train_flags, config_from_args, resolve_device
from train_test.data import add_generated_flags
from train_test.figures import real_pool
from train_test.quality.compare import (class_fidelity, mean_corr, mean_spectrum, physiology_summary,
                                        pooled_comparison, realism, signal_statistics)
from train_test.quality.demographics import demographic_report
from train_test.quality.features import (build_from_checkpoint, load_classifier, source_stats, train_classifier,
                                         train_pooled, tstr)
from train_test.quality.markdown import fmt, pct, quality_markdown
from train_test.quality.metrics import correlation_distance, finite_or_none, memorisation, relative_nearest_distances
from train_test.quality.physiology import BACKENDS, backend_description, physiology_of, resolve_backend
from train_test.quality.plots import FIGURES, plot_correlations, plot_memorisation, plot_physiology, plot_psd
from train_test.quality.sources import (REAL_TEST, REFERENCE, generated_sources, per_class_counts, sample_rows,
                                        sample_unconditional)

QUALITY_FORMAT = "cnvae-ecg-quality/1"


@dataclass(frozen=True)
class QualityOptions:
    """What the quality report is told (the flags of :func:`parse_args` but the classifier's, which are ``train``)."""

    real: str | os.PathLike  #: prepared data folder
    out_dir: str | os.PathLike
    dataset: str = "ptb-xl"
    generated: tuple[str, ...] = ()  #: generated-set folders (or NAME=PATH)
    generated_root: str | os.PathLike | None = None
    classifier_ckpt: str | os.PathLike | None = None  #: None: OUT_DIR/classifier.pt
    retrain_classifier: bool = False
    no_tstr: bool = False
    max_per_class: int = 200
    max_train_nn: int = 0
    k: int = 5
    physiology_backend: str = "auto"
    workers: int = 1
    seed: int = 0
    no_demographics: bool = False
    demographics_arch: str | None = None  #: None: train.arch
    demographics_epochs: int | None = None  #: None: train.epochs
    demographics_max_train: int = 4000
    demographics_max_eval: int = 1000
    train: TrainConfig = field(default_factory=TrainConfig)  #: the feature classifier's training

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "QualityOptions":
        return cls(real=args.data_dir, out_dir=args.out_dir, dataset=args.dataset,
                   generated=tuple(args.generated or ()), generated_root=args.generated_root,
                   classifier_ckpt=args.classifier_ckpt,
                   retrain_classifier=args.retrain_classifier, no_tstr=args.no_tstr,
                   max_per_class=args.max_per_class, max_train_nn=args.max_train_nn, k=args.k,
                   physiology_backend=args.physiology_backend, workers=args.physiology_workers, seed=args.seed,
                   no_demographics=args.no_demographics, demographics_arch=args.demographics_arch,
                   demographics_epochs=args.demographics_epochs, demographics_max_train=args.demographics_max_train,
                   demographics_max_eval=args.demographics_max_eval, train=config_from_args(args))


def evaluate(opts: QualityOptions) -> dict:
    """Run every stage and write quality.json, quality.md and the figures; return the JSON dictionary."""
    t_start = time.time()
    timing: dict[str, float] = {}
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = opts.train
    backend = resolve_backend(opts.physiology_backend)
    rng = np.random.default_rng(opts.seed)

    # Sources first: a bad folder fails before any training.
    train_pool = real_pool(opts.real, opts.dataset, "train")
    test_pool = real_pool(opts.real, opts.dataset, "test")
    if not len(test_pool) or not len(train_pool):
        raise ValueError(f"{Path(opts.real) / opts.dataset}: the train and test splits must both hold ECGs")
    gens = generated_sources(opts.generated, opts.generated_root, length=test_pool.length)
    if not gens:
        raise ValueError("no generated set given: pass --generated GEN_DIR ... or --generated_root ROOT")
    train_rows = sample_rows(train_pool.labels, opts.max_per_class, rng)
    test_rows = sample_rows(test_pool.labels, opts.max_per_class, rng)
    # An unconditional set has no class to cap: as many ECGs as the real test sample (all with --max_per_class 0).
    gen_rows = {g: sample_unconditional(len(s.pool), len(test_rows) if opts.max_per_class else 0, rng)
                if s.unconditional else sample_rows(s.pool.labels, opts.max_per_class, rng) for g, s in gens.items()}
    for g, rows in gen_rows.items():
        if not len(rows):
            raise ValueError(f"generator {g}: no ECG carries any of the 9 classes ({gens[g].paths})")

    # A checkpoint to reuse is checked now, so a wrong one fails before minutes of work.
    ckpt_path = Path(opts.classifier_ckpt) if opts.classifier_ckpt else out / "classifier.pt"
    trained_here = opts.retrain_classifier or not ckpt_path.is_file()
    ckpt = None if trained_here else load_classifier(ckpt_path, opts.real, opts.dataset)

    # Physiology before torch runs anything, so the worker processes fork from a parent without torch threads.
    t0 = time.time()
    workers = max(1, opts.workers)
    phys = {REAL_TEST: physiology_of(test_pool, test_rows, backend, workers, "physiology: real test")}
    for g, s in gens.items():
        phys[g] = physiology_of(s.pool, gen_rows[g], backend, workers, f"physiology: {g}")
    timing["physiology"] = time.time() - t0

    # The real-data classifier (TRTR), reused from its checkpoint when there is one.
    t0 = time.time()
    if trained_here:
        ckpt = train_classifier(opts.real, opts.dataset, cfg, opts.seed, ckpt_path)
    else:
        tqdm.write(f"reusing the classifier {ckpt_path} ({ckpt['arch']})")
    timing["classifier"] = time.time() - t0
    device = resolve_device(cfg.device)
    model, standardize = build_from_checkpoint(ckpt, device)

    t0 = time.time()
    # On a CPU large batches only add memory traffic (XResNet1d101: 0.08 s/ECG at 16, 0.11 s at 256 on 2 cores).
    batch = max(1, cfg.eval_batch_size if device.type == "cuda" else min(cfg.eval_batch_size, 32))
    train_stats, freqs = source_stats(train_pool, train_rows, model, standardize, device, batch, "features: real train")
    test_stats, _ = source_stats(test_pool, test_rows, model, standardize, device, batch, "features: real test",
                                 pooled=True)
    test_stats.phys = phys[REAL_TEST]
    gen_stats = {}
    for g, s in gens.items():
        gen_stats[g], _ = source_stats(s.pool, gen_rows[g], model, standardize, device, batch, f"features: {g}",
                                       pooled=True)
        gen_stats[g].phys = phys[g]
    timing["features"] = time.time() - t0

    # Memorisation: nearest real training ECG (all of them, or a random --max_train_nn).
    t0 = time.time()
    nn_rows = np.arange(len(train_pool))
    if 0 < opts.max_train_nn < len(nn_rows):
        nn_rows = np.sort(rng.choice(nn_rows, opts.max_train_nn, replace=False))
    train_pooled_x = train_pooled(train_pool, nn_rows)
    # Relative to each ECG's own amplitude: flat or weak generated ECGs are not "copies" (in absolute distance they
    # sit next to the lowest-amplitude training ECGs).
    test_nn, _ = relative_nearest_distances(test_stats.pooled, train_pooled_x)
    gen_nn = {g: relative_nearest_distances(st.pooled, train_pooled_x)[0] for g, st in gen_stats.items()}
    del train_pooled_x
    timing["memorisation"] = time.time() - t0

    # TSTR (one training per generator) unless skipped.
    t0 = time.time()
    tstr_res = {}
    if not opts.no_tstr:
        stats = (np.asarray(ckpt["mean"], dtype=np.float32), np.asarray(ckpt["std"], dtype=np.float32))
        # The configuration the real-data classifier was trained with, so TSTR and TRTR differ in the data only.
        tcfg = TrainConfig(**{**ckpt["train_config"], "device": cfg.device, "num_workers": cfg.num_workers,
                              "eval_batch_size": cfg.eval_batch_size})
        for g, s in tqdm(gens.items(), desc="TSTR", unit="generator", leave=False):
            if not s.unconditional:  # no labels to train a classifier on
                tstr_res[g] = tstr(s, opts.real, opts.dataset, tcfg, stats, opts.seed)
    timing["tstr"] = time.time() - t0

    # Assemble the rows: the real reference first, then the generators.
    thresholds = ckpt["thresholds"]
    ref_mem = memorisation(test_nn, test_nn)
    ref_mem["flagged"] = None
    rows = [{"name": REFERENCE, "kind": "reference", "surrogate": False, "paths": [str(opts.real)],
             "n_total": len(test_pool), "n_sampled": int(len(test_rows)),
             "n_per_class": per_class_counts(test_stats.labels),
             "fidelity": {"trtr": ckpt["fit"]["test"], **class_fidelity(test_stats, thresholds)},
             "realism": realism(test_stats, train_stats, opts.k),
             "signal": signal_statistics(test_stats, train_stats) | {
                 "limb_error": {"max": finite_or_none(test_stats.limb.max()), "median": finite_or_none(np.median(test_stats.limb))}},
             "physiology": physiology_summary(test_stats), "memorisation": ref_mem,
             "pooled": pooled_comparison(test_stats, train_stats, opts.k, test_stats.phys)}]
    for g, st in gen_stats.items():
        if gens[g].unconditional:
            fidelity = {"trts": None, "recognised": None, "tstr": None}
        else:
            fidelity = class_fidelity(st, thresholds)
            fidelity["tstr"] = tstr_res.get(g)
        rows.append({"name": g, "kind": "generator", "surrogate": gens[g].surrogate,
                     "unconditional": gens[g].unconditional, "pooled": pooled_comparison(test_stats, st, opts.k),
                     "paths": gens[g].paths,
                     "n_total": len(gens[g].pool), "n_sampled": int(len(gen_rows[g])),
                     "n_per_class": per_class_counts(st.labels), "fidelity": fidelity,
                     "realism": realism(test_stats, st, opts.k), "signal": signal_statistics(test_stats, st),
                     "physiology": physiology_summary(st), "memorisation": memorisation(gen_nn[g], test_nn)})

    # Figures.
    t0 = time.time()
    everyone = {REAL_TEST: test_stats, **gen_stats}
    spectra = {n: mean_spectrum(s, np.ones(len(s.labels), dtype=bool)) for n, s in everyone.items()}
    mats = {n: mean_corr(s, np.ones(len(s.labels), dtype=bool)) for n, s in everyone.items()}
    corr_d = {n: finite_or_none(correlation_distance(mats[REAL_TEST], m)) for n, m in mats.items() if n != REAL_TEST}
    written = [save_figure(plot_psd(freqs, spectra), out / FIGURES[0], dpi=110),
               save_figure(plot_correlations(mats, corr_d), out / FIGURES[1], dpi=110),
               save_figure(plot_physiology({n: s.phys for n, s in everyone.items()}), out / FIGURES[2], dpi=110),
               save_figure(plot_memorisation({REAL_TEST: test_nn, **gen_nn}, ref_mem["threshold"]), out / FIGURES[3], dpi=110)]
    timing["figures"] = time.time() - t0

    # Demographic fidelity (age/sex predictor on real training ECGs), last and on its own RNG, so that skipping it
    # changes nothing else in the report.
    demographics = None
    if not opts.no_demographics:
        t0 = time.time()
        demographics = demographic_report(
            opts.real, opts.dataset, {g: list(s.paths) for g, s in gens.items()},
            arch=opts.demographics_arch or cfg.arch,
            epochs=opts.demographics_epochs if opts.demographics_epochs is not None else cfg.epochs,
            seed=opts.seed, device=device, max_train=opts.demographics_max_train,
            max_eval=opts.demographics_max_eval, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay)
        timing["demographics"] = time.time() - t0
    timing["total"] = time.time() - t_start

    fit_res = ckpt["fit"]
    q = {"format": QUALITY_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
         "config": {"real": str(opts.real), "dataset": opts.dataset, "generated": list(opts.generated),
                    "generated_root": opts.generated_root, "seed": opts.seed, "k": opts.k,
                    "max_per_class": opts.max_per_class, "max_train_nn": opts.max_train_nn,
                    "workers": workers, "tstr": not opts.no_tstr, "train_config": asdict(cfg)},
         "classes": list(CLASS_ABBREVS), "physiology_backend": backend_description(backend),
         "classifier": {"checkpoint": str(ckpt_path), "trained_here": trained_here, "arch": ckpt["arch"],
                        "feature_dim": int(test_stats.feats.shape[1]), "trtr": fit_res["test"],
                        "best_epoch": fit_res["best_epoch"], "n_train": fit_res["n_train"],
                        "thresholds": dict(zip(CLASS_ABBREVS, thresholds))},
         "real": {"train": {"n_split": len(train_pool), "n_sampled": int(len(train_rows)),
                            "n_per_class": per_class_counts(train_stats.labels)},
                  "test": {"n_split": len(test_pool), "n_sampled": int(len(test_rows)),
                           "n_per_class": per_class_counts(test_stats.labels)},
                  "n_train_nn": int(len(nn_rows))},
         "rows": rows, "demographics": demographics, "figures": [p.name for p in written], "timing": timing}
    atomic_write_json(out / "quality.json", q)
    atomic_write_text(out / "quality.md", quality_markdown(q))
    q["written"] = [str(p) for p in (*written, out / "quality.json", out / "quality.md")]
    return q


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the quality report."""
    p = argparse.ArgumentParser(prog="python -m train_test.evaluate_quality",
                                description="Quality of generated ECGs against real ones: class fidelity (TRTS, "
                                            "TSTR), feature distances, precision/recall, spectra, physiology and "
                                            "memorisation.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", "--real", dest="data_dir", required=True,
                   help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS,
                   help="prepared dataset the generators were trained on")
    add_generated_flags(p)
    p.add_argument("--out_dir", required=True, help="folder for quality.json, quality.md and the figures")
    p.add_argument("--classifier_ckpt", default=None,
                   help="classifier checkpoint: reused when the file exists, else trained on the real training "
                        "split and saved there (default: OUT_DIR/classifier.pt)")
    p.add_argument("--retrain_classifier", action="store_true",
                   help="train the classifier even if --classifier_ckpt exists (and overwrite it)")
    p.add_argument("--no_tstr", action="store_true", help="skip TSTR (one classifier training per generator)")
    p.add_argument("--max_per_class", type=int, default=200,
                   help="ECGs per class and source (0: all); the union over classes is evaluated")
    p.add_argument("--max_train_nn", type=int, default=0,
                   help="real training ECGs searched for the nearest neighbour of the memorisation check (0: all)")
    p.add_argument("--k", type=int, default=5, help="neighbours of precision/recall/density/coverage")
    p.add_argument("--physiology_backend", default="auto", choices=BACKENDS,
                   help="auto: neurokit2 when installed, else the ecg_stats R-peak detector (no PR/QRS/QT)")
    p.add_argument("--physiology_workers", "--workers", dest="physiology_workers", type=int,
                   default=min(4, os.cpu_count() or 1),
                   help="processes for the physiology measurements")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the classifier trainings")
    g = p.add_argument_group("demographic fidelity (sex AUROC, age MAE/correlation against the requested age/sex)")
    g.add_argument("--no_demographics", action="store_true",
                   help="skip the demographic section (an age/sex predictor trained on real training ECGs)")
    g.add_argument("--demographics_arch", default=None, choices=ARCH_NAMES,
                   help="backbone of the age/sex predictor (unset: --arch)")
    g.add_argument("--demographics_epochs", type=int, default=None,
                   help="training epochs of the age/sex predictor (unset: --epochs)")
    g.add_argument("--demographics_max_train", type=int, default=4000,
                   help="real training ECGs the predictor is trained on, a random subset (0: all; all are held in "
                        "memory, 0.24 MB each)")
    g.add_argument("--demographics_max_eval", type=int, default=1000,
                   help="ECGs per real test split and per generated set scored (0: all)")
    add_train_flags(p)
    args = p.parse_args(argv)
    if args.k < 1:
        p.error("--k must be >= 1")
    if args.demographics_epochs is not None and args.demographics_epochs < 1:
        p.error("--demographics_epochs must be >= 1")
    if args.demographics_max_train < 0 or args.demographics_max_eval < 0:
        p.error("--demographics_max_train and --demographics_max_eval must be >= 0")
    if args.max_per_class < 0 or args.max_train_nn < 0:
        p.error("--max_per_class and --max_train_nn must be >= 0")
    if not args.generated and args.generated_root is None:
        p.error("give generated sets with --generated GEN_DIR ... or --generated_root ROOT")
    return args


def main(args: argparse.Namespace) -> dict:
    """Write the quality report and print where it is."""
    q = evaluate(QualityOptions.from_args(args))
    for r in q["rows"]:
        real = r["pooled"] if r.get("unconditional") else r["realism"]["overall"]  # no classes: all ECGs pooled
        tqdm.write(f"{r['name']}: FD {fmt(real['fd'])}, KID {fmt(real['kid'])}, precision {fmt(real['precision'])}, "
                   f"recall {fmt(real['recall'])}, near copies {pct(r['memorisation']['fraction_below'])}")
    for r in (q.get("demographics") or {}).get("rows", []):
        tqdm.write(f"demographics {r['name']}: " + (r["note"] if r.get("note") else
                   f"sex AUROC {fmt(r['sex_auroc'])}, age MAE {fmt(r['age_mae'])} (chance "
                   f"{fmt(r['age_mae_chance'])}), age r {fmt(r['age_corr'])}"))
    print(f"quality report: {Path(args.out_dir) / 'quality.md'} ({q['timing']['total']:.1f} s)")
    return q

"""Checkpoint maintenance; the run machinery lives in :mod:`nvae_ecg.run`, the CPU kernels in :mod:`nvae_ecg.kernels`.

``python -m nvae_ecg.utils convert --trusted OLD.pt`` re-saves a checkpoint of an older version of this repository
(numpy RNG state inside, refused by the weights-only load of :func:`nvae_ecg.run.load_plain`) as plain data, after
an explicit opt-in, since reading it unpickles it fully. The seeding, RNG-state and checkpoint helpers that this
module held are re-exported from :mod:`nvae_ecg.run`, and :func:`keep_freed_cpu_memory` (glibc's heap kept without
``mmap``) from :mod:`nvae_ecg.kernels`, for older imports.

``python -m nvae_ecg.utils slim RUN/checkpoints/latest.pt OUT.pt`` keeps what the samplers read (weights, config,
classes, bounds, demographic statistics, provenance) and drops optimiser, scaler, RNG and discriminator states (a
third of the size for ``demo``): a copy to share or commit that generates exactly what the full checkpoint does.

Example::

    python -m nvae_ecg.utils convert --trusted runs/old/checkpoints/latest.pt   # old checkpoint -> plain data
    python -m nvae_ecg.utils slim runs/cnvae/checkpoints/latest.pt demo/cnvae.pt  # sampler-only copy
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from pathlib import Path

import torch

# Re-exported for older imports (nvae_ecg.train): the allocator switch is one of the CPU kernels.
from nvae_ecg.kernels import keep_freed_cpu_memory  # noqa: F401
# Re-exported for older imports (tests, train_test): defined once, in nvae_ecg.run.
from nvae_ecg.run import (ResumableSampler, _plain_rng, atomic_torch_save, convert_command,  # noqa: F401
                          gather_rng_states, git_version, load_checkpoint, load_plain, restore_rank_rng, rng_state,
                          seed_everything, set_rng_state, to_plain)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike | None = None, backup: bool = True) -> Path:
    """Re-save a trusted older checkpoint as plain data (loads it with weights_only=False: trusted files only)."""
    src = Path(src)
    dst = src if dst is None else Path(dst)
    # The only full unpickling in the repository, reached only through `convert --trusted`.
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{src} is not a checkpoint of this repository (expected a dict with 'model' and 'config')")
    if "rng" in ckpt:
        rng = ckpt["rng"]
        ckpt["rng"] = [_plain_rng(r) for r in rng] if isinstance(rng, list) else _plain_rng(rng)
    plain = to_plain(ckpt)
    buf = io.BytesIO()
    torch.save(plain, buf)
    buf.seek(0)
    torch.load(buf, map_location="cpu", weights_only=True)  # the result must pass the safe load
    if backup and dst == src:
        shutil.copy2(src, src.with_name(src.name + ".bak"))
    atomic_torch_save(plain, dst)
    return dst


#: What a sampler (nvae_ecg.generate, pulse2pulse.generate) and the provenance in meta.json read from a checkpoint.
SAMPLER_KEYS = ("kind", "generator", "model", "config", "classes", "bounds", "condition", "demographics", "dataset",
                "epoch", "step", "g_step", "train_seconds", "code_version", "torch_version")


def slim_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Write a sampler-only copy of a checkpoint (SAMPLER_KEYS; no optimiser, RNG or discriminator); returns it."""
    if not Path(src).is_file():
        raise SystemExit(f"error: checkpoint {src} does not exist (expected RUN/checkpoints/latest.pt of a "
                         "training run)")
    ckpt = load_plain(src)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise SystemExit(f"error: {src} is not a checkpoint of this repository (no 'model' and 'config')")
    slim = {k: ckpt[k] for k in SAMPLER_KEYS if k in ckpt}
    # Contiguous copies: a state-dict tensor can be a view into a larger storage, which torch.save writes whole.
    slim["model"] = {k: v.detach().clone().contiguous() for k, v in ckpt["model"].items()}
    slim["slimmed_from"] = str(Path(src).name)
    atomic_torch_save(slim, Path(dst))
    return slim


def main(argv=None) -> int:
    """``convert --trusted OLD.pt [--out NEW.pt]`` (old checkpoint to plain data) or ``slim IN.pt OUT.pt``."""
    p = argparse.ArgumentParser(prog="python -m nvae_ecg.utils",
                                description="Checkpoint maintenance of cNVAE-ECG and the GAN baselines.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="re-save a checkpoint of an older version of this repository as plain data, "
                                       "so that it loads with weights_only=True")
    c.add_argument("checkpoint", help="the old checkpoint (rewritten in place unless --out; a .bak copy is kept)")
    c.add_argument("--out", default=None, help="write the converted checkpoint here instead")
    c.add_argument("--trusted", action="store_true",
                   help="required: I trust this file (reading it unpickles it fully, which can run any code it holds)")
    c.add_argument("--no_backup", action="store_true", help="do not keep CHECKPOINT.bak when converting in place")
    s = sub.add_parser("slim", help="write a sampler-only copy (weights, config, classes, bounds, provenance)")
    s.add_argument("checkpoint", help="a checkpoint of nvae_ecg.train or pulse2pulse.train")
    s.add_argument("out", help="where to write the sampler-only copy")
    args = p.parse_args(argv)
    if args.command == "slim":
        slim_checkpoint(args.checkpoint, args.out)
        size = Path(args.out).stat().st_size
        print(f"wrote {args.out} ({size / 2**20:.2f} MiB; {Path(args.checkpoint).stat().st_size / 2**20:.2f} MiB "
              "before)")
        return 0
    if not args.trusted:
        print(f"error: converting {args.checkpoint} unpickles it fully, which runs any code it carries; pass "
              "--trusted only for a file you or this repository wrote", file=sys.stderr)
        return 2
    try:
        load_plain(args.checkpoint)
        print(f"{args.checkpoint} already loads with weights_only=True; nothing to convert")
        return 0
    except SystemExit:
        pass
    out = convert_checkpoint(args.checkpoint, args.out, backup=not args.no_backup)
    print(f"wrote {out} (plain data; loads with weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The published Pulse2Pulse generator of ``deepfake-ecg`` as a reference trained on real ECGs.

The PyPI package ``deepfake-ecg`` (1.1.2, MIT, Thambawita et al. 2021, "DeepFake
electrocardiograms using generative adversarial networks are the beginning of the end
for privacy issues in medicine", Sci. Rep. 11:21896; the cNVAE-ECG paper's reference
[13]) ships the weights of the unconditional Pulse2Pulse generator it was trained
with on 7,233 real normal 10-s ECGs (``deepfakeecg/checkpoints/g_stat.pt``). Its
architecture is :class:`pulse2pulse.models.Pulse2PulseGenerator` at the ``paper``
size (d = 50) without the class conditioning, so the weights load into our
generator (:func:`load_into`, mapping :data:`PARAMETER_MAP`) and our generator with
all-zero labels reproduces theirs (tests/test_deepfake.py, to 1e-5).

What the package generates (``deepfakeecg.generate``, read from its source):

- noise ``U[-1, 1]`` of shape (8, 5000), one per ECG;
- output ``tanh(...)`` (8, 5000), multiplied by 6000 and truncated to integers
  (``out * 6000`` then ``.int()``), written as ``.asc`` text, 5000 rows of 8 columns;
- columns = leads I, II, V1, V2, V3, V4, V5, V6 (the package README), 500 Hz, 10 s;
- units: microvolts. Their training loader (vlbthambawita/Pulse2Pulse,
  ``data/ecg_data_loader.py``) divides the integer MUSE ``.asc`` exports by
  ``norm_num = 6000``, so one unit of the generator's output x 6000 is one unit of
  the real data; the package's later version plots that output as "Amplitude [μV]";
  and the amplitudes fit microvolts (R in lead II ~ 0.8 mV, S in V2 ~ 1.5 mV, R in
  V5 ~ 1.2 mV, see :data:`UNITS_EVIDENCE`), not the 4.88 uV steps of raw MUSE ADC.
  Hence mV = tanh output x 6000 / 1000 = tanh output x 6 (a +-6 mV range).

Leads: our generators model I, III, V1..V6 (:data:`nvae_ecg.leads.LEADS8`); the
second channel of theirs is lead II, so ``III = II - I`` before the lead algebra
expands the 12 leads (II is then reproduced exactly).

``python -m pulse2pulse.deepfake --out_dir DIR --n N --seed S`` writes N of its ECGs
in the generated-sample format (12 leads, mV, all-zero labels, ``meta.json``
``"unconditional": true`` and ``task_type`` ``unconditional``), which
``train_test.evaluate_quality`` reads as an unconditional source: its global
figures (pooled FD/KID/precision/recall, spectra, correlations, physiology over
all ECGs, R-peak share, memorisation) are computed, its per-class rows read
"unconditional". ``python -m pulse2pulse.train --model pulse2pulse --init_from
deepfake-ecg`` starts the conditional GAN from these weights. Nothing is
downloaded: the weights are read from the installed package.

Example::

    python -m pulse2pulse.deepfake --out_dir results/reference/deepfake_ecg --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from nvae_ecg.classes import NUM_CLASSES
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.samples import SampleWriter
from pulse2pulse.config import GANConfig, get_config
from pulse2pulse.models import Pulse2PulseGenerator

#: Distribution, pinned version and import name of the published generator.
PACKAGE = "deepfake-ecg"
PACKAGE_VERSION = "1.1.2"
MODULE = "deepfakeecg"
#: The name of the source in meta.json, the quality report and ``--init_from``.
NAME = "deepfake-ecg"
WEIGHTS = "checkpoints/g_stat.pt"
#: Lead order of the package's 8 output channels (its README).
DEEPFAKE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
#: The package multiplies the tanh output by this to get its integer values, in microvolts.
OUTPUT_SCALE = 6000.0
MICROVOLTS_PER_MILLIVOLT = 1000.0
#: tanh output -> mV.
MV_PER_UNIT = OUTPUT_SCALE / MICROVOLTS_PER_MILLIVOLT
UNITS_EVIDENCE = (
    "deepfakeecg.generate writes int(tanh_output * 6000); the training loader of vlbthambawita/Pulse2Pulse "
    "(data/ecg_data_loader.py, ECGDataSimple norm_num=6000) divided the real MUSE .asc integers by 6000; the "
    "package's later deepfakeecg.py labels the same values 'Amplitude [uV]'; generated amplitudes (median over "
    "16 ECGs, seed 0, minus each lead's median) peak at about 0.8 mV in II, 1.2-1.3 mV in V4/V5, -1.45 mV in V2: "
    "microvolts, not 4.88 uV ADC steps")

#: Their state_dict key -> ours (Pulse2PulseGenerator). Encoder conv_1..conv_6 -> down.0..5; the decoder's
#: up-sampling convolutions deconv_{1,2,3,5,6,7}.conv1d -> up.0..5.conv (their deconv_4 is commented out).
PARAMETER_MAP = {
    **{f"conv_{i + 1}.{p}": f"down.{i}.{p}" for i in range(6) for p in ("weight", "bias")},
    **{f"deconv_{k}.conv1d.{p}": f"up.{j}.conv.{p}" for j, k in enumerate((1, 2, 3, 5, 6, 7))
       for p in ("weight", "bias")},
}
#: Their parameters that their forward pass never uses (the dense layer of WaveGAN*, the transposed
#: convolutions of the non-upsampling branch, the post-processing filter); not loaded.
UNUSED_PREFIXES = ("fc1.", "ppfilter1.", "deconv_1.Conv1dTrans.", "deconv_2.Conv1dTrans.", "deconv_3.Conv1dTrans.",
                   "deconv_5.Conv1dTrans.", "deconv_6.Conv1dTrans.", "deconv_7.Conv1dTrans.")
#: Our parameters without a counterpart (the class conditioning); :func:`load_into` zeroes them by default.
NEW_PARAMETERS = ("class_embedding",)


def package_dir() -> Path:
    """Folder of the installed ``deepfakeecg`` package (found without importing it)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {PACKAGE} package is not installed; pip install {PACKAGE}=={PACKAGE_VERSION} "
                                  f"(it is in requirements.txt; scripts/setup_env.sh installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def weights_path() -> Path:
    """The generator weights inside the installed package."""
    path = package_dir() / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return path


def package_version() -> str | None:
    """Installed version of deepfake-ecg (None if its metadata is unavailable)."""
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def load_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Their generator's state_dict (keys of ``deepfakeecg.models.pulse2pulse.Pulse2pulseGenerator``), read safely."""
    ckpt = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "stat_dict" not in ckpt:
        raise ValueError(f"{path or weights_path()} is not the deepfake-ecg generator checkpoint (no 'stat_dict')")
    return ckpt["stat_dict"]


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_config(cfg: GANConfig) -> None:
    """Refuse a configuration their weights do not fit, naming what differs."""
    if cfg.model != "pulse2pulse":
        raise ValueError(f"the {NAME} weights are a Pulse2Pulse generator; they cannot initialise {cfg.model} "
                         f"(use --model pulse2pulse)")
    if cfg.model_size != 50 or cfg.num_channels != 8 or cfg.length != 5000:
        raise ValueError(f"the {NAME} weights need the 'paper' Pulse2Pulse size (d = 50, 8 x 5000); got "
                         f"d = {cfg.model_size}, {cfg.num_channels} x {cfg.length} (use --config paper and no "
                         f"--model_size)")


def init_error(model: str, config: str, model_size: int | None) -> str | None:
    """Why ``--init_from deepfake-ecg`` cannot apply to these training flags (None if it can)."""
    if model != "pulse2pulse":
        return (f"--init_from {NAME} loads the published Pulse2Pulse generator and applies only to --model "
                f"pulse2pulse, not --model {model}")
    size = model_size if model_size is not None else get_config(config).model_size
    if size != 50:
        return f"--init_from {NAME} needs the paper generator size d = 50 (--config paper), got d = {size}"
    return None


@torch.no_grad()
def load_into(generator: Pulse2PulseGenerator, state_dict: dict | None = None,
              zero_class_embedding: bool = True) -> dict:
    """Copy their weights into the shared layers of ``generator`` (in place); returns what was loaded and what not.

    With ``zero_class_embedding`` (default) the class tensors start at zero, so the
    generator is exactly theirs for every label; otherwise they keep their values.
    """
    check_config(generator.cfg)
    theirs = load_state_dict() if state_dict is None else state_dict
    ours = generator.state_dict()
    missing = sorted(k for k in PARAMETER_MAP if k not in theirs)
    if missing:
        raise ValueError(f"the {NAME} state_dict lacks {missing}")
    unknown = sorted(k for k in theirs if k not in PARAMETER_MAP and not k.startswith(UNUSED_PREFIXES))
    if unknown:
        raise ValueError(f"unexpected parameters in the {NAME} state_dict: {unknown}")
    for src, dst in PARAMETER_MAP.items():
        if tuple(theirs[src].shape) != tuple(ours[dst].shape):
            raise ValueError(f"{src} {tuple(theirs[src].shape)} does not fit {dst} {tuple(ours[dst].shape)}")
        ours[dst].copy_(theirs[src].to(ours[dst].dtype))
    new = sorted(k for k in ours if k not in PARAMETER_MAP.values())
    if zero_class_embedding:
        generator.class_embedding.zero_()
    return {"loaded": sorted(PARAMETER_MAP.values()), "new": new,
            "unused": sorted(k for k in theirs if k not in PARAMETER_MAP),
            "n_loaded": int(sum(ours[v].numel() for v in PARAMETER_MAP.values())),
            "n_new": int(sum(ours[k].numel() for k in new)), "class_embedding_zeroed": bool(zero_class_embedding)}


def build(num_classes: int = NUM_CLASSES, device=None) -> Pulse2PulseGenerator:
    """Our Pulse2Pulse generator (``paper`` size) holding their weights, class tensors zero, in eval mode."""
    g = Pulse2PulseGenerator(get_config("paper", model="pulse2pulse", num_classes=num_classes))
    load_into(g)
    return g.to(device or "cpu").eval()


def to_millivolts12(x01: torch.Tensor | np.ndarray) -> np.ndarray:
    """Our generator's [0, 1] output (B, 8, T) with their channel order (I, II, V1..V6) -> (B, 12, T) mV."""
    x = torch.as_tensor(x01).double().cpu().numpy()
    mv = (2.0 * x - 1.0) * MV_PER_UNIT  # tanh output x 6000 uV / 1000
    eight = mv.copy()
    eight[:, 1] = mv[:, 1] - mv[:, 0]  # III = II - I: our independent leads are I, III, V1..V6
    return eight_to_twelve(eight).astype(np.float32)


@torch.no_grad()
def generate(n: int, seed: int = 0, batch_size: int = 32, device=None,
             generator: Pulse2PulseGenerator | None = None) -> np.ndarray:
    """``n`` of their ECGs as (n, 12, 5000) float32 mV (our lead order), noise drawn from ``seed``."""
    device = torch.device(device or "cpu")
    g = generator if generator is not None else build(device=device)
    rng = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    for lo in range(0, n, batch_size):
        b = min(batch_size, n - lo)
        y = torch.zeros(b, g.cfg.num_classes, device=device)
        out.append(to_millivolts12(g(g.noise(b, device=device, generator=rng), y)))
    return np.concatenate(out) if out else np.zeros((0, 12, g.cfg.length), dtype=np.float32)


def write_set(out_dir: str | Path, n: int, seed: int = 0, batch_size: int = 32, device=None,
              overwrite: bool = False) -> Path:
    """Write ``n`` of their ECGs in the generated-sample format (unconditional: all-zero labels)."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    device = torch.device(device or "cpu")
    g = build(device=device)
    rng = torch.Generator(device=device).manual_seed(int(seed))
    path = weights_path()
    meta = {"generator": NAME, "task_type": "unconditional", "unconditional": True, "seed": int(seed),
            "package": f"{PACKAGE}=={package_version() or PACKAGE_VERSION}", "weights": str(path),
            "weights_sha256": sha256(path),
            "reference": "Thambawita et al. 2021, Sci. Rep. 11:21896 (unconditional Pulse2Pulse, 7,233 real "
                         "normal ECGs); the cNVAE-ECG paper's reference [13]",
            "source_leads": list(DEEPFAKE_LEADS),
            "source_units": "microvolts (tanh output x 6000); written here in mV (x 6 / 1 V); III = II - I",
            "units_evidence": UNITS_EVIDENCE}
    with SampleWriter(out_dir, n, length=g.cfg.length, overwrite=overwrite) as writer:
        for lo in range(0, n, batch_size):
            b = min(batch_size, n - lo)
            with torch.no_grad():
                y = torch.zeros(b, g.cfg.num_classes, device=device)
                x12 = to_millivolts12(g(g.noise(b, device=device, generator=rng), y))
            writer.write(x12, np.zeros((b, NUM_CLASSES), dtype=np.uint8))
        return writer.close(meta)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m pulse2pulse.deepfake",
                                description="Write ECGs of the published deepfake-ecg Pulse2Pulse generator "
                                            "(unconditional, trained on real ECGs) in the generated-sample format.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", "--out", dest="out_dir", required=True, help="output folder")
    p.add_argument("--n", type=int, default=200, help="number of ECGs")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument("--batch_size", type=int, default=32, help="ECGs per forward pass")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="compute device")
    p.add_argument("--overwrite", action="store_true", help="replace --out_dir if it exists")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch_size < 1:
        p.error("--n and --batch_size must be >= 1")
    return args


def main(args: argparse.Namespace) -> int:
    """Write the set."""
    out = write_set(args.out_dir, args.n, args.seed, args.batch_size, args.device, args.overwrite)
    print(f"wrote {args.n} {NAME} ECGs (unconditional, 12 leads, mV) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))

"""The published deepfake-ecg Pulse2Pulse: its weights in our generator, its ECGs in the quality report, --init_from."""

import json
import warnings

import numpy as np
import pytest
import torch

from nvae_ecg.classes import NUM_CLASSES
from nvae_ecg.leads import LEADS12, limb_identity_error
from nvae_ecg.samples import read_samples

pytest.importorskip("deepfakeecg", reason="deepfake-ecg is in requirements.txt")
from pulse2pulse import deepfake as D  # noqa: E402
from pulse2pulse.config import get_config  # noqa: E402
from pulse2pulse.models import Pulse2PulseGenerator  # noqa: E402


@pytest.fixture(scope="module")
def ours():
    return D.build()


def _theirs():
    from deepfakeecg import Generator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their nn.init.kaiming_normal deprecation warning
        g = Generator()
    g.load_state_dict(D.load_state_dict())
    return g.eval()


def test_our_generator_with_their_weights_reproduces_theirs(ours):
    theirs = _theirs()
    z = torch.rand(3, 8, 5000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.zeros(3, NUM_CLASSES)
    y[1, 0] = y[2, 3] = y[2, 5] = 1  # class tensors start at zero: the same generator for any label
    with torch.no_grad():
        ref = theirs(z)
        got = ours(z, y) * 2 - 1  # ours maps tanh to [0, 1]
    assert ref.shape == got.shape == (3, 8, 5000)
    assert (ref - got).abs().max().item() < 1e-5
    assert ref.std() > 0.01  # not a trivially constant output


def test_parameter_mapping_is_complete_and_refuses_other_sizes():
    g = Pulse2PulseGenerator(get_config("paper", model="pulse2pulse", num_classes=4))
    rep = D.load_into(g, zero_class_embedding=False)
    ours_keys = set(g.state_dict())
    assert set(rep["loaded"]) | set(rep["new"]) == ours_keys and rep["new"] == ["class_embedding"]
    assert rep["n_new"] == 4 * 8 * 5000 and not rep["class_embedding_zeroed"] and g.class_embedding.abs().sum() > 0
    # Their checkpoint also holds layers their forward never runs; nothing else is left out.
    assert all(k.startswith(D.UNUSED_PREFIXES) for k in rep["unused"])
    unused_layers = {k.split(".")[0] for k in rep["unused"]}
    assert unused_layers == {"fc1", "ppfilter1", *(f"deconv_{i}" for i in (1, 2, 3, 5, 6, 7))}
    assert rep["n_loaded"] == sum(p.numel() for n, p in g.named_parameters() if n != "class_embedding")
    with pytest.raises(ValueError, match="d = 50"):
        D.load_into(Pulse2PulseGenerator(get_config("small", model="pulse2pulse")))
    with pytest.raises(ValueError, match="Pulse2Pulse"):
        D.check_config(get_config("paper", model="wavegan_star"))


def test_entry_point_writes_an_unconditional_set_in_millivolts(tmp_path):
    out = tmp_path / "deepfake"
    assert D.main(D.parse_args(["--out_dir", str(out), "--n", "6", "--seed", "3", "--batch_size", "4"])) == 0
    s = read_samples(out)
    assert s.signals.shape == (6, 12, 5000) and s.signals.dtype == np.float32
    assert not s.labels.any() and s.meta["unconditional"] is True and s.meta["task_type"] == "unconditional"
    assert s.meta["generator"] == "deepfake-ecg" and s.meta["units"] == "mV" and s.meta["fs"] == 500
    assert s.meta["source_leads"] == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    x = np.asarray(s.signals, dtype=np.float64)
    assert limb_identity_error(x) < 1e-5
    # Their integer output is in microvolts: lead II (their second channel, kept exactly) = tanh x 6000 / 1000.
    again = D.generate(6, seed=3, batch_size=4)
    np.testing.assert_allclose(again, x, atol=1e-6)
    theirs = _theirs()
    z = D.build().noise(4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        uv = theirs(z).numpy() * D.OUTPUT_SCALE
    np.testing.assert_allclose(x[:4, LEADS12.index("II")], uv[:, 1] / 1000.0, atol=1e-4)
    np.testing.assert_allclose(x[:4, LEADS12.index("III")], (uv[:, 1] - uv[:, 0]) / 1000.0, atol=1e-4)
    # Plausible ECG amplitudes in mV: QRS peaks around 1 mV, nothing near the +-6 mV tanh limits.
    centred = x - np.median(x, axis=-1, keepdims=True)
    r_ii = np.median(centred[:, LEADS12.index("II")].max(axis=-1))
    s_v2 = np.median(centred[:, LEADS12.index("V2")].min(axis=-1))
    assert 0.3 < r_ii < 2.5 and -3.0 < s_v2 < -0.3 and np.abs(x).max() < 5.0
    assert np.median(centred[:, LEADS12.index("aVR")].min(axis=-1)) < -0.2  # aVR mostly negative
    with pytest.raises(FileExistsError):
        D.write_set(out, 2)


def test_init_from_deepfake_starts_pulse2pulse_from_their_weights(prepared_ptbxl, tmp_path):
    from pulse2pulse import train

    def args(*extra):
        return train.parse_args(["--data_dir", str(prepared_ptbxl), "--root", str(tmp_path), "--batch_size", "2",
                                 "--epochs", "1", "--max_steps", "1", "--num_workers", "0", "--sample_every", "0",
                                 "--log_every", "1", "--init_from", "deepfake-ecg", *extra])

    for bad in (["--model", "wavegan_star"], ["--model", "pulse2pulse", "--config", "small"],
                ["--model", "pulse2pulse", "--model_size", "20"]):
        with pytest.raises(SystemExit):
            args(*bad)
    # Paper-size generator, tiny discriminator, lr 0: the saved generator is the initial one.
    a = args("--model", "pulse2pulse", "--config", "paper", "--disc_model_size", "2", "--learning_rate", "0",
             "--save", "init")
    assert train.main(a) == 0
    ckpt = torch.load(tmp_path / "init" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    theirs = D.load_state_dict()
    for src, dst in D.PARAMETER_MAP.items():
        assert torch.equal(ckpt["model"][dst], theirs[src]), dst
    assert not ckpt["model"]["class_embedding"].any()
    assert "initialised from deepfake-ecg" in (tmp_path / "init" / "log.txt").read_text()
    assert json.loads((tmp_path / "init" / "args.json").read_text())["init_from"] == "deepfake-ecg"


def test_quality_report_takes_the_unconditional_set(prepared_ptbxl, tmp_path):
    from train_test import quality as E
    from train_test.surrogate import write_surrogate

    D.write_set(tmp_path / "gen" / "deepfake", 8, seed=0)
    write_surrogate(prepared_ptbxl, tmp_path / "gen" / "noisy_addition", generator="noisy", task_type="addition",
                    seed=0)
    argv = ["--real", str(prepared_ptbxl), "--generated_root", str(tmp_path / "gen"), "--out_dir",
            str(tmp_path / "q"), "--arch", "tiny", "--epochs", "1", "--device", "cpu", "--num_workers", "0",
            "--bootstrap", "10", "--max_per_class", "8", "--workers", "1", "--k", "1", "--no_tstr"]
    q = E.main(E.parse_args(argv))
    rows = {r["name"]: r for r in q["rows"]}
    dfe, noisy = rows["deepfake-ecg"], rows["noisy"]
    assert dfe["unconditional"] is True and noisy["unconditional"] is False
    assert dfe["fidelity"] == {"trts": None, "recognised": None, "tstr": None}
    assert 0 < dfe["n_sampled"] <= 8
    for r in q["rows"]:
        pl = r["pooled"]
        assert pl["fd"] is not None and pl["fd"] >= 0 and pl["psd_js"] is not None and 0 <= pl["r_peaks"] <= 1
    assert dfe["pooled"]["r_peaks"] >= 0.5  # the published generator draws beats
    assert dfe["physiology"]["overall"]["hr"]["n_measured"] >= 4
    md = (tmp_path / "q" / "quality.md").read_text()
    assert "**All ECGs pooled**" in md and "| deepfake-ecg *(unconditional)* |" in md
    assert "| deepfake-ecg | unconditional | unconditional |" in md  # overview: no TRTS/TSTR
    assert "| deepfake-ecg | " + " | ".join(["unconditional"] * NUM_CLASSES) + " |" in md  # per-class rows
    assert "| all ECGs |" in md

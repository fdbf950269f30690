"""Checkpoint safety and hygiene: plain-data checkpoints, refusal of pickled payloads, conversion of old ones,
clean-up of temporaries left by killed runs."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nvae_ecg import utils
from nvae_ecg.io import atomic_write_json, pid_alive, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Runs a shell command when unpickled: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "cnvae", "model": {}, "config": {}, "epoch": 0, "step": 0, "payload": _Payload(marker)},
               path)
    return path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_rng_state_is_plain_and_restores_every_stream(tmp_path):
    utils.seed_everything(11)
    state = utils.rng_state()
    path = tmp_path / "rng.pt"
    torch.save({"rng": [state]}, path)
    loaded = torch.load(path, weights_only=True)["rng"][0]  # plain data: no numpy object, no custom class
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    utils.seed_everything(99)
    assert utils.restore_rank_rng(loaded, 0) and not utils.restore_rank_rng([loaded], 1)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_generate_refuses_a_pickled_payload(tmp_path):
    marker = tmp_path / "MARKER"
    ckpt = _evil_checkpoint(tmp_path / "evil.pt", marker)
    r = subprocess.run([sys.executable, "-m", "nvae_ecg.generate", "--checkpoint", str(ckpt), "--task_type", "custom",
                        "--labels", "AF", "--count", "1", "--out_dir", str(tmp_path / "gen"), "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert f"refusing to load {ckpt}" in r.stderr and "Traceback" not in r.stderr
    assert "python -m nvae_ecg.utils convert --trusted" in r.stderr
    assert not marker.exists() and not (tmp_path / "gen").exists()
    from nvae_ecg import generate

    with pytest.raises(SystemExit, match="refusing to load"):
        generate.checkpoint_generator_name(ckpt)  # the scripts' memory-mapped peek at the checkpoint
    assert not marker.exists()


def test_trainers_refuse_to_resume_from_a_pickled_payload(prepared_ptbxl, tmp_path):
    from nvae_ecg import train
    from pulse2pulse import generate as gan_generate
    from pulse2pulse import train as gan_train

    marker = tmp_path / "MARKER"
    ckpt = _evil_checkpoint(tmp_path / "runs" / "evil" / "checkpoints" / "latest.pt", marker)
    args = train.parse_args(["--data_dir", str(prepared_ptbxl), "--root", str(tmp_path / "runs"), "--save", "evil",
                             "--config", "tiny", "--num_workers", "0", "--resume"])
    with pytest.raises(SystemExit, match=f"refusing to load {ckpt}"):
        train.main(args)
    args = gan_train.parse_args(["--model", "wavegan_star", "--data_dir", str(prepared_ptbxl), "--root",
                                 str(tmp_path / "runs"), "--save", "evil", "--config", "tiny", "--num_workers", "0",
                                 "--resume"])
    with pytest.raises(SystemExit, match="refusing to load"):
        gan_train.main(args)
    with pytest.raises(SystemExit, match="refusing to load"):
        gan_generate.load_generator(ckpt, torch.device("cpu"))
    assert not marker.exists()


def test_old_checkpoint_is_refused_then_converted_after_opt_in(tmp_path, capsys):
    # What this repository wrote before: numpy's RNG state as a tuple holding an ndarray (not weights-only loadable).
    utils.seed_everything(3)
    legacy_rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    old = {"kind": "cnvae", "model": {"w": torch.arange(4.0)}, "config": {"length": 5000}, "epoch": 1, "step": 7,
           "bounds": {"lower": np.zeros(8), "upper": np.float64(1.5)}, "rng": legacy_rng}
    path = tmp_path / "old.pt"
    torch.save(old, path)
    with pytest.raises(SystemExit, match="convert --trusted"):
        utils.load_checkpoint(path)
    assert utils.main(["convert", str(path)]) == 2  # no silent full unpickling without the opt-in
    assert "--trusted" in capsys.readouterr().err
    assert utils.main(["convert", "--trusted", str(path)]) == 0
    assert (tmp_path / "old.pt.bak").is_file()
    ckpt = utils.load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.arange(4.0)) and ckpt["step"] == 7
    expected = np.random.rand()  # the stream right after the legacy snapshot
    np.random.seed(0)
    utils.set_rng_state(ckpt["rng"])
    assert np.random.rand() == expected


def test_remove_stale_temporaries_keeps_live_ones(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    assert not pid_alive(dead) and pid_alive(live)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    dead_file, live_file = ckpts / f".latest.pt.tmp-{dead}", ckpts / f".latest.pt.tmp-{live}"
    dead_json = ckpts / f".meta.json.tmp-{dead}-abc123"
    for f in (dead_file, live_file, dead_json, ckpts / "latest.pt", ckpts / ".notes.tmp"):
        f.write_bytes(b"x")
    dead_dir, other_dir = tmp_path / f".gen.tmp-{dead}", tmp_path / f".other.tmp-{dead}"
    for d in (dead_dir, other_dir):
        d.mkdir()
        (d / "signals.npy").write_bytes(b"x")
    assert sorted(remove_stale_temporaries(ckpts)) == sorted([dead_file, dead_json])
    assert live_file.exists() and (ckpts / "latest.pt").exists() and (ckpts / ".notes.tmp").exists()
    assert remove_stale_temporaries(tmp_path, name="gen") == [dead_dir]  # only that target's temporaries
    assert other_dir.exists()
    # atomic JSON writes name their temporary after the writer's process, so the clean-up can judge them.
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert remove_stale_temporaries(tmp_path, name="x.json") == []

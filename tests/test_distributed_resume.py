"""Two CPU processes (gloo), launched like srun/mpirun would (one process per rank, rendezvous by environment):
a resumed run equals the uninterrupted one tensor for tensor (the VAE trainer and the GAN trainer, both through the
shared machinery of ``nvae_ecg.run``), and an existing run is refused by every rank at once."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, tag: str, argv: list[str], timeout: float = 300, module: str = "nvae_ecg.train"
            ) -> list[int]:
    """Start one `python -m MODULE` per rank; their exit codes (a hang past ``timeout`` fails the test)."""
    port = _free_port()
    procs, logs = [], []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
        log = open(tmp_path / f"{tag}.rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pytest.fail(f"{tag}: a rank was still running after {timeout} s (codes {[p.returncode for p in procs]}); "
                    + (tmp_path / f"{tag}.rank0.log").read_text()[-1500:])
    finally:
        for log in logs:
            log.close()
    return [p.returncode for p in procs]


def _argv(prepared: Path, root: Path, save: str, *extra: str) -> list[str]:
    return ["--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny", "--device", "cpu",
            "--batch_size", "4", "--epochs", "4", "--num_workers", "0", "--seed", "5", "--log_every", "2",
            "--eval_every", "100", "--iw_every", "0", "--iw_samples", "2", "--max_val_batches", "1",
            "--sample_every", "0", "--save_every", "0", "--percent_epochs", "50", *extra]


def _load(root: Path, save: str) -> dict:
    return torch.load(root / save / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)


def test_two_process_resume_is_bit_for_bit_and_an_existing_run_stops_every_rank(prepared_ptbxl, tmp_path):
    root = tmp_path / "runs"
    assert _launch(tmp_path, "straight", _argv(prepared_ptbxl, root, "straight")) == [0, 0]
    a = _load(root, "straight")
    assert isinstance(a["rng"], list) and len(a["rng"]) == WORLD  # every rank's own RNG state
    assert not torch.equal(a["rng"][0]["torch"], a["rng"][1]["torch"])
    steps_per_epoch = a["step"] // 4
    assert steps_per_epoch >= 2
    cut = 2 * steps_per_epoch - 1  # stop one step before the end of epoch 2
    assert _launch(tmp_path, "cut", _argv(prepared_ptbxl, root, "cut", "--max_steps", str(cut))) == [0, 0]
    half = _load(root, "cut")
    assert (half["epoch"], half["batch_in_epoch"], half["step"]) == (1, steps_per_epoch - 1, cut)
    assert _launch(tmp_path, "resume", _argv(prepared_ptbxl, root, "cut", "--resume")) == [0, 0]
    b = _load(root, "cut")
    assert (b["step"], b["epoch"]) == (a["step"], 4)
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:3]}"
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    # Rank 0 finds the run and refuses; every rank must exit with it instead of waiting for rank 0 forever.
    assert _launch(tmp_path, "again", _argv(prepared_ptbxl, root, "straight"), timeout=120) == [2, 2]


def _gan_argv(prepared: Path, root: Path, save: str, *extra: str) -> list[str]:
    return ["--model", "wavegan_star", "--data_dir", str(prepared), "--root", str(root), "--save", save,
            "--config", "tiny", "--device", "cpu", "--batch_size", "8", "--epochs", "2", "--num_workers", "0",
            "--seed", "5", "--log_every", "1", "--n_critic", "2", "--sample_every", "0", "--save_every", "0",
            "--quality_every", "0", *extra]


def test_two_process_gan_resume_is_bit_for_bit(prepared_ptbxl, tmp_path):
    root, gan = tmp_path / "runs", "pulse2pulse.train"
    assert _launch(tmp_path, "gan_straight", _gan_argv(prepared_ptbxl, root, "straight"), module=gan) == [0, 0]
    a = _load(root, "straight")
    assert isinstance(a["rng"], list) and len(a["rng"]) == WORLD  # every rank's own RNG state
    assert not torch.equal(a["rng"][0]["torch"], a["rng"][1]["torch"])
    steps_per_epoch = a["step"] // 2
    assert steps_per_epoch >= 2
    cut = steps_per_epoch + 1  # stop after the first critic step of epoch 2
    assert _launch(tmp_path, "gan_cut", _gan_argv(prepared_ptbxl, root, "cut", "--max_steps", str(cut)),
                   module=gan) == [0, 0]
    half = _load(root, "cut")
    assert (half["epoch"], half["batch_in_epoch"], half["step"]) == (1, 1, cut)
    assert _launch(tmp_path, "gan_resume", _gan_argv(prepared_ptbxl, root, "cut", "--resume"), module=gan) == [0, 0]
    b = _load(root, "cut")
    assert (b["step"], b["g_step"], b["epoch"]) == (a["step"], a["g_step"], 2)
    for part in ("model", "discriminator"):
        differ = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not differ, f"{part}: {len(differ)} of {len(a[part])} tensors differ, e.g. {differ[:3]}"
    for opt in ("optimizer_g", "optimizer_d"):
        for k, v in a[opt]["state"].items():
            assert torch.equal(v["exp_avg"], b[opt]["state"][k]["exp_avg"])
            assert torch.equal(v["exp_avg_sq"], b[opt]["state"][k]["exp_avg_sq"])

"""The training scripts name a preset (--config) and do not restate its model flags; the preset is what trains."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from nvae_ecg import train as T
from nvae_ecg.config import get_config

REPO = Path(__file__).resolve().parents[1]


def _argv_of(script: str, tmp_path: Path, env: dict) -> list[str]:
    """The nvae_ecg.train arguments the script would run (PYTHON replaced by a recorder)."""
    out = tmp_path / "argv"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {out}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    subprocess.run(["bash", str(REPO / "scripts" / script), "DATA", "ROOT", "NAME"], check=True,
                   env={**os.environ, "PYTHON": str(fake), **env}, cwd=tmp_path)
    argv = out.read_text().splitlines()
    assert argv[:2] == ["-m", "nvae_ecg.train"]
    return argv[2:]


@pytest.mark.parametrize("script, preset", [("training_conditional.sh", "paper"),
                                            ("training_conditional_2d.sh", "paper2d")])
def test_training_script_trains_the_preset_without_restating_it(tmp_path, script, preset):
    args = T.parse_args(_argv_of(script, tmp_path, {}))
    assert args.config == preset
    restated = [name for name in T._MODEL_FLAGS
                if name not in ("num_classes", "representation") and not name.startswith("stft_")
                and getattr(args, name) is not None]
    assert restated == [], f"{script} restates preset flags {restated}"
    assert T.build_config(args, num_classes=9, length=5000) == get_config(preset, length=5000)

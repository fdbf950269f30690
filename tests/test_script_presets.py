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


# ----------------------------------------------------------------------------------------- script defaults = Python's
#: Scripts that are no single entry point's front end (a pipeline, the environment, the test runner).
NOT_FRONT_ENDS = {"quickstart.sh", "make_demo_checkpoints.sh", "run_tests.sh", "setup_env.sh"}
#: Flags that say where and what a run is (folders, files, names, the selection a script loops over or exists
#: for), not how it is configured: a script has to pass them.
PER_RUN = {"data_dir", "prepared_dir", "real", "root", "save", "out_dir", "out_root", "checkpoint", "generated_root",
           "generated", "classifier_ckpt", "json", "overwrite", "model", "dataset", "classes", "task_type",
           "task_types", "targets", "proportions", "source", "target", "reference", "pretrain_classes", "datasets"}
#: Deliberate differences between a script's default and its module's, each said in the script's comment.
DELIBERATE = {
    # The paper's batch, as BENCHMARKS.md reports scripts/benchmark.sh; the module's defaults are a quick CPU look.
    ("benchmark.sh", "batch_size"): (32, 8), ("benchmark.sh", "steps"): (20, 5), ("benchmark.sh", "warmup"): (5, 2),
    ("benchmark.sh", "split_steps"): (3, 2), ("benchmark.sh", "sample_batches"): (3, 2),
    # The benchmarks' protocol repeats every cell over three seeds; the module's default is one run.
    ("enrich_train.sh", "seeds"): ([0, 1, 2], [0]), ("enrich_pretrain.sh", "seeds"): ([0, 1, 2], [0]),
    # The sets of the benchmark tables follow the authors' sampling protocol; the module's default is plain sampling.
    ("generate_samples.sh", "protocol"): ("authors", "plain"),
    # The 2-D script is the 2-D preset (scripts/training_conditional_2d.sh -> training_conditional.sh).
    ("training_conditional_2d.sh", "config"): ("paper2d", "paper"),
    ("training_conditional_2d.sh", "representation"): ("stft", None),
}
#: How each front end is called in the test: positional arguments (and files they need, made under tmp_path).
FRONT_ENDS = {
    "benchmark.sh": ["{tmp}/bench"], "cvae_ecg_train.sh": [], "enrich_pretrain.sh": ["D", "{gen}", "R"],
    "enrich_train.sh": ["D", "{gen}", "R"], "evaluate_quality.sh": ["D", "{gen}", "O"],
    "generate_gan_samples.sh": ["{ckpt}"], "generate_samples.sh": ["{ckpt}"], "generate_sssd_samples.sh": ["{ckpt}"],
    "prepare_data.sh": ["RAW", "OUT"], "pulse2pulse_train.sh": [], "sssd_ecg_train.sh": [],
    "training_conditional.sh": [], "training_conditional_2d.sh": [], "wavegan_star_train.sh": [],
}


def _calls_of(script: str, tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(module, argv) of every `$PYTHON -m module ...` the script runs with its defaults (PYTHON: a recorder)."""
    rec, fake = tmp_path / "calls", tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\n{{ printf "%s\\037" "$@"; printf "\\n"; }} >> {rec}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "ckpt.pt").write_text("")
    (tmp_path / "gen").mkdir(exist_ok=True)
    argv = [a.format(tmp=tmp_path, gen=tmp_path / "gen", ckpt=tmp_path / "ckpt.pt") for a in FRONT_ENDS[script]]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    subprocess.run(["bash", str(REPO / "scripts" / script), *argv], check=True, env={**env, "PYTHON": str(fake)},
                   cwd=tmp_path, capture_output=True)
    calls = []
    for line in rec.read_text().splitlines():
        words = line.split("\037")[:-1]
        assert words[0] == "-m", f"{script} runs {words[:2]}, not a module"
        calls.append((words[1], words[2:]))
    return calls


def _parse(module: str, argv: list[str]):
    """(namespace, parser) of ``module.parse_args(argv)``."""
    import argparse
    import importlib

    mod = importlib.import_module(module)
    seen = []
    orig = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        seen.append(self)
        return orig(self, args, namespace)

    argparse.ArgumentParser.parse_args = spy
    try:
        ns = mod.parse_args(argv)
    finally:
        argparse.ArgumentParser.parse_args = orig
    return ns, seen[-1]


def _where_and_what(ns, parser) -> list[str]:
    """The argv of the positionals and the PER_RUN flags alone, with the values the script gave them."""
    import argparse

    pos, opt = [], []
    for a in parser._actions:
        value = getattr(ns, a.dest, None)
        if a.dest == "help" or value is None or (a.option_strings and a.dest not in PER_RUN):
            continue
        if isinstance(a, argparse._StoreTrueAction):
            opt += [a.option_strings[0]] if value else []
            continue
        words = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        if a.option_strings:
            opt += [a.option_strings[0], *words] if words else []
        else:
            pos += words
    return pos + opt


def test_every_shell_script_is_covered():
    scripts = {p.name for p in (REPO / "scripts").glob("*.sh")}
    assert scripts == set(FRONT_ENDS) | NOT_FRONT_ENDS, "add a new script to FRONT_ENDS or NOT_FRONT_ENDS"


@pytest.mark.parametrize("script", sorted(FRONT_ENDS))
def test_script_defaults_are_the_python_defaults(tmp_path, script):
    """Run the script with its defaults; every flag it gives equals its module's default, but the listed ones."""
    calls = _calls_of(script, tmp_path)
    assert calls, f"{script} ran no Python module"
    differ, checked = {}, set()
    for module, argv in calls:
        if module in checked:  # a loop over MODELS/TASKS/TARGETS: the first call stands for the others
            continue
        checked.add(module)
        ns, parser = _parse(module, argv)
        plain, _ = _parse(module, _where_and_what(ns, parser))
        for dest, value in vars(ns).items():
            if dest not in PER_RUN and value != getattr(plain, dest):
                differ[dest] = (value, getattr(plain, dest))
    expected = {dest: v for (s, dest), v in DELIBERATE.items() if s == script}
    assert differ == expected, f"{script}: defaults that differ from Python's and are not listed in DELIBERATE"

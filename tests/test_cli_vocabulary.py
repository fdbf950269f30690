"""One CLI vocabulary: every entry point takes the new flag names, and the old spellings still parse to the same value."""

from __future__ import annotations

import importlib

import pytest

#: (module, argv the module needs besides the flag under test, new spelling, old spelling, dest, value)
CASES = [
    ("train_test.classifier", ["--out_dir", "o"], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.classifier", ["--data_dir", "P", "--out_dir", "o"], "--learning_rate", "--lr", "learning_rate", "0.5"),
    ("train_test.enrich_train", ["--out_dir", "o"], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.enrich_train", ["--data_dir", "P", "--out_dir", "o"], "--learning_rate", "--lr", "learning_rate",
     "0.5"),
    ("train_test.enrich_pretrain", ["--out_dir", "o"], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.enrich_pretrain", ["--data_dir", "P", "--out_dir", "o"], "--learning_rate", "--lr", "learning_rate",
     "0.5"),
    ("train_test.data", [], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.figures", ["--out_dir", "o"], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.report", ["results"], "--data_dir", "--prepared_dir", "data_dir", "P"),
    ("train_test.evaluate_quality", ["--generated", "g", "--out_dir", "o"], "--data_dir", "--real", "data_dir", "P"),
    ("train_test.evaluate_quality", ["--data_dir", "P", "--generated", "g", "--out_dir", "o"],
     "--physiology_workers", "--workers", "physiology_workers", "3"),
    ("nvae_ecg.data.prepare", ["RAW", "OUT"], "--num_workers", "--workers", "num_workers", "3"),
    ("nvae_ecg.data.synthetic", ["OUT"], "--num_workers", "--workers", "num_workers", "3"),
]


@pytest.mark.parametrize("module, rest, new, old, dest, value", CASES,
                         ids=[f"{c[0]}:{c[3]}" for c in CASES])
def test_old_and_new_spelling_give_the_same_value(module, rest, new, old, dest, value):
    parse = importlib.import_module(module).parse_args
    a, b = parse(rest + [new, value]), parse(rest + [old, value])
    got = getattr(a, dest)
    assert got == type(got)(value) and getattr(b, dest) == got
    assert not hasattr(a, old.lstrip("-")) or old.lstrip("-") == dest


@pytest.mark.parametrize("module, new, old", sorted({(c[0], c[2], c[3]) for c in CASES}))
def test_help_names_the_new_spelling_first(module, new, old, capsys):
    with pytest.raises(SystemExit):
        importlib.import_module(module).parse_args(["--help"])
    text = capsys.readouterr().out
    assert f"{new} " in text and (old not in text or text.index(new) < text.index(old))


def test_surrogate_takes_data_dir_and_the_old_positional():
    from train_test.surrogate import parse_args

    new, old = parse_args(["--data_dir", "P", "O"]), parse_args(["P", "O"])
    assert (new.data_dir, new.out_dir) == (old.data_dir, old.out_dir) == ("P", "O")
    assert vars(new) == vars(old)
    with pytest.raises(SystemExit):
        parse_args(["O"])  # no prepared data folder
    with pytest.raises(SystemExit):
        parse_args(["P", "O", "--data_dir", "P"])  # given twice


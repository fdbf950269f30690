"""nvae_ecg.time_to_quality reads the monitor's scalars and finds the first evaluation that met each mark."""

from __future__ import annotations

import json

import pytest

from nvae_ecg import time_to_quality as TQ


def _run(folder, points, model=None):
    """A run folder with args.json and quality scalars at given (minutes, step, r_peaks, hr_order)."""
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"model": model} if model else {"config": "demo"}))
    writer = SummaryWriter(log_dir=str(folder))
    writer.flush()  # the events file and its first record (the start of the run) exist from here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(folder.glob("events.out.tfevents.*"))))
    acc.Reload()
    base = acc.FirstEventTimestamp()
    for minutes, step, r_peaks, order in points:
        writer.add_scalar("quality/r_peaks", r_peaks, step, walltime=base + 60 * minutes)
        writer.add_scalar("quality/hr_order", order, step, walltime=base + 60 * minutes)
        writer.add_scalar("quality/psd_js", 0.5, step, walltime=base + 60 * minutes)
    writer.close()
    return folder


def test_minutes_to_each_mark(tmp_path):
    vae = _run(tmp_path / "cnvae", [(1.0, 100, 0.2, 0.0), (2.5, 200, 0.95, 0.0), (4.0, 300, 0.85, 1.0)])
    gan = _run(tmp_path / "gan", [(1.0, 10, 0.0, 0.0), (3.0, 20, 0.5, 0.0)], model="pulse2pulse")
    rows = [TQ.time_to_quality(TQ.read_curve(r), r_peaks=0.9) for r in (vae, gan)]
    assert (rows[0].generator, rows[0].minutes_to_r_peaks, rows[0].minutes_to_hr_order) == ("cnvae", 2.5, 4.0)
    assert rows[0].evaluations == 3 and rows[0].minutes_trained == pytest.approx(4.0)
    assert rows[0].last_r_peaks == pytest.approx(0.85)
    assert (rows[1].generator, rows[1].minutes_to_r_peaks, rows[1].minutes_to_hr_order) == ("pulse2pulse", None, None)
    table = TQ.markdown_table(rows, 0.9)
    assert "| cnvae | cnvae | 4.00 | 3 | 2.50 | 4.00 | 85 % |" in table and "never" in table


def test_cli_writes_table_and_json_and_refuses_a_folder_without_events(tmp_path, capsys):
    run = _run(tmp_path / "r", [(1.0, 50, 1.0, 1.0)])
    assert TQ.main(TQ.parse_args([str(run), "--out", str(tmp_path / "ttq")])) == 0
    assert json.loads((tmp_path / "ttq.json").read_text())["runs"][0]["minutes_to_r_peaks"] == pytest.approx(1.0)
    assert (tmp_path / "ttq.md").read_text().startswith("| run |")
    assert (tmp_path / "ttq.png").stat().st_size > 5_000  # the learning-curve figure
    (tmp_path / "empty").mkdir()
    assert TQ.main(TQ.parse_args([str(tmp_path / "empty")])) == 2
    assert "no TensorBoard events file" in capsys.readouterr().err

"""The progress bar on an 80-column terminal: the live line is cut to the width, the epoch's
final line shows every log (validation included), wrapped between logs."""

from __future__ import annotations

import io

import numpy as np

import wframe as wf
from wframe.callbacks import ProgressBar

LOGS = {
    "loss": 0.123456,
    "accuracy": 0.9,
    "top_5_accuracy": 0.99,
    "precision": 0.875,
    "recall": 0.8125,
    "val_loss": 0.25,
    "val_accuracy": 0.875,
    "val_top_5_accuracy": 0.96875,
    "learning_rate": 0.001,
}


class Terminal(io.StringIO):
    """What a terminal receives; ``shutil.get_terminal_size`` reads ``COLUMNS``."""

    def isatty(self):
        return True


def final_lines(out: Terminal) -> list[str]:
    """The lines printed after the live bar's last redraw (tqdm moves back with ``\\r``)."""
    return out.getvalue().rsplit("\r", 1)[-1].splitlines()


def drive(bar: ProgressBar, logs: dict, steps: int = 5) -> None:
    bar.set_params({"epochs": 3, "steps": steps, "verbose": 1})
    bar.on_epoch_begin(0)
    for i in range(steps):
        bar.on_train_batch_end(i, {k: v for k, v in logs.items() if not k.startswith("val_")})
    bar.on_epoch_end(0, logs)


def test_the_epoch_line_wraps_to_show_every_log_on_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = Terminal()
    drive(ProgressBar(file=out, refresh=0.0), LOGS)
    # the live line is redrawn in place, never past the width (a longer one would scroll)
    live = out.getvalue().rsplit("\r", 1)[0].split("\r")
    assert any("epoch 1/3" in s for s in live)
    assert all(len(s) <= 80 for s in live), max(live, key=len)
    lines = final_lines(out)
    assert len(lines) > 1 and all(len(line) < 80 for line in lines), lines
    assert lines[0].startswith("epoch 1/3: 5/5 steps, ")
    assert all(line.startswith("    ") for line in lines[1:])  # continuation lines
    text = " - ".join(line.strip() for line in lines)
    for key, value in LOGS.items():  # (the learning rate's digits are its formatter's)
        assert f"{key}: " + ("" if key == "learning_rate" else f"{value:.4f}") in text, text
    assert text.count(" - ") == len(LOGS)  # one separator per log: nothing cut, nothing twice


def test_a_wide_terminal_keeps_one_line_and_a_log_file_never_wraps(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    out = Terminal()
    drive(ProgressBar(file=out, lines=True), LOGS)  # verbose=2 on a terminal: no live bar
    (line,) = out.getvalue().splitlines()
    assert "val_accuracy: 0.8750" in line and "\r" not in out.getvalue()
    monkeypatch.setenv("COLUMNS", "40")
    log = io.StringIO()  # not a terminal: exactly one line per epoch, however long
    drive(ProgressBar(file=log), LOGS)
    (line,) = log.getvalue().splitlines()
    assert len(line) > 150 and "val_top_5_accuracy: 0.9688 - learning_rate: " in line


def test_fit_on_an_80_column_terminal_shows_the_validation_logs(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    out = Terminal()
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(3)], seed=0)
        history = model.fit(
            x,
            y,
            epochs=1,
            batch_size=8,
            validation_data=(x[:8], y[:8]),
            callbacks=[ProgressBar(file=out)],
            verbose=0,
        )
    lines = final_lines(out)
    assert all(len(line) < 80 for line in lines), lines
    text = " ".join(lines)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert f"{key}: {history.history[key][-1]:.4f}" in text, text


def test_verbose_auto_is_keras_3_default_a_progress_bar(capsys):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(3)], seed=0)
        model.fit(x, y, epochs=1, batch_size=8, verbose="auto")
    printed = capsys.readouterr()
    assert "epoch 1/1: 2/2 steps" in printed.out + printed.err

"""``python -m wframe``: doctor, parity and summary, run as a user runs them (subprocesses), plus
parity's comparison and exit status in-process with stand-in backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import wframe as wf
from wframe.backends import backend_class
from wframe.cli import COMMANDS, parity
from wframe.layers import Dense

TIMEOUT = 120
JAX_OK, JAX_WHY = backend_class("jax").is_available()


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WFRAME_BACKEND", "JAX_ENABLE_X64")}
    return subprocess.run(
        [sys.executable, "-m", "wframe", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


# ----------------------------------------------------------------------------- help
def test_help_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    out = cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:") and command in out.stdout
    assert "Exit status" in out.stdout


def test_usage_errors_exit_2():
    out = cli()
    assert out.returncode == 2 and "required" in out.stderr
    assert cli("nope").returncode == 2
    out = cli("parity", "--backends", "nope")
    assert out.returncode == 2 and "Unknown backend 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_main_returns_the_status_in_process(capsys):
    from wframe.__main__ import main

    assert main(["--help"]) == 0
    assert main(["parity", "--rtol", "-1"]) == 2
    assert "--rtol" in capsys.readouterr().err


# ----------------------------------------------------------------------------- doctor
def test_doctor_table():
    out = cli("doctor")
    assert out.returncode == 0, out.stderr
    for word in ("Python", "numpy", "jax", "cupy", "backend numpy", "CUDA", "BLAS"):
        assert word in out.stdout
    assert np.__version__ in out.stdout


def test_doctor_json():
    out = cli("doctor", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["packages"]["numpy"] == np.__version__
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert {"numpy", "jax", "cupy"} <= set(report["backends"])
    assert report["backends"]["numpy"]["available"] is True
    for b in report["backends"].values():
        assert b["available"] or b["reason"]  # an unavailable backend says why
    assert report["backends"]["jax"]["available"] is JAX_OK
    assert "devices" in report["jax"] and ("driver" in report["cuda"])
    assert "libraries" in report["blas"]


# ----------------------------------------------------------------------------- parity
def test_parity_mlp_numpy_and_jax():
    out = cli("parity", "--model", "mlp", "--backends", "numpy,jax")
    if not JAX_OK:  # asked for by name: a backend that cannot run fails the check
        assert out.returncode == 1, out.stdout + out.stderr
        assert "skipped jax" in out.stdout and "backend 'jax' was asked for" in out.stdout
        return
    assert out.returncode == 0, out.stdout + out.stderr
    assert "max abs" in out.stdout and "max rel" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("mlp ")]
    quantities = {r[2] for r in rows}
    assert {"predict", "loss", "grad/dense_0/W", "fit/loss", "fit/dense_2/b"} <= quantities
    assert all(r[1] == "jax" and r[-1] == "ok" for r in rows)
    assert "parity: ok" in out.stdout


@pytest.mark.skipif(not JAX_OK, reason=f"jax unavailable: {JAX_WHY}")
def test_parity_fails_with_exit_1_beyond_the_tolerance():
    out = cli("parity", "--model", "mlp", "--backends", "jax", "--rtol", "0", "--atol", "0")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "parity: FAILED" in out.stdout


@pytest.mark.skipif(backend_class("cupy").is_available()[0], reason="cupy can run here")
def test_parity_exits_1_when_a_named_backend_cannot_run():
    out = cli("parity", "--backends", "cupy")
    assert out.returncode == 1, out.stdout + out.stderr
    why = backend_class("cupy").is_available()[1]
    assert f"skipped cupy: {why}" in out.stdout
    assert (
        f"parity: FAILED, backend 'cupy' was asked for (--backends) but cannot run here: {why}"
    ) in out.stdout
    assert "nothing to compare" not in out.stdout and "Traceback" not in out.stderr


def test_parity_runs_what_it_can_and_still_fails_for_a_named_backend(monkeypatch, capsys):
    ref = {"predict": np.array([1.0, 2.0], np.float32)}
    _stand_ins(monkeypatch, {"numpy": ref, "other": ref})
    monkeypatch.setattr(
        parity, "plan_backends", lambda requested: (["numpy", "other"], {"gone": "no device"})
    )
    assert parity.parity(["mlp"], ["other", "gone"]) == 1
    text = capsys.readouterr().out
    assert "mlp    other" in text and "ok" in text  # the comparison that could run, ran
    assert "backend 'gone' was asked for (--backends) but cannot run here: no device" in text
    assert parity.parity(["mlp"]) == 0  # not named: skipped, as before
    assert "skipped gone: no device" in capsys.readouterr().out


def _stand_ins(monkeypatch, outputs):
    """Parity over the backends ``numpy`` and ``other`` whose results are ``outputs[name]``."""
    monkeypatch.setattr(parity, "plan_backends", lambda requested: (["numpy", "other"], {}))

    def run_model(kind, backend, *, seed, dtype):
        result = outputs[backend]
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(parity, "run_model", run_model)


def test_parity_exit_status_in_process(monkeypatch, capsys):
    ref = {"predict": np.array([1.0, 2.0, 0.0], np.float32), "grad/dense_0/W": np.ones((2, 2))}
    near = {"predict": ref["predict"] * (1 + 5e-5), "grad/dense_0/W": ref["grad/dense_0/W"]}
    _stand_ins(monkeypatch, {"numpy": ref, "other": near})
    assert parity.parity(["mlp"]) == 0
    assert "parity: ok, all 2 comparisons" in capsys.readouterr().out
    assert parity.parity(["mlp"], rtol=1e-5) == 1
    text = capsys.readouterr().out
    assert "parity: FAILED, 1 of 2" in text and "2 of 3 elements outside tolerance" in text

    off_dtype = {**near, "grad/dense_0/W": ref["grad/dense_0/W"].astype(np.float32)}
    _stand_ins(monkeypatch, {"numpy": ref, "other": off_dtype})
    assert parity.parity(["mlp"]) == 1
    assert "dtype float32 differs" in capsys.readouterr().out

    _stand_ins(monkeypatch, {"numpy": ref, "other": RuntimeError("boom")})
    assert parity.parity(["mlp"]) == 1
    assert "FAIL RuntimeError: boom" in capsys.readouterr().out


def test_compare_floor_nan_and_shape():
    e = np.array([1.0, 0.0, -2.0, np.nan, np.inf])
    a = e + np.array([1e-5, 5e-6, 0.0, 0.0, 0.0])
    max_abs, max_rel, problem = parity.compare(a, e, rtol=1e-4, atol=1e-5)
    assert problem == "" and max_abs == pytest.approx(1e-5) and max_rel == pytest.approx(5e-5)
    _, _, problem = parity.compare(e + np.array([0, 2e-5, 0, 0, 0]), e, rtol=1e-4, atol=1e-5)
    assert problem == "1 of 5 elements outside tolerance"
    _, _, problem = parity.compare(np.zeros(5), e, rtol=1e-4, atol=1e-5)
    assert "4 of 5" in problem  # NaN and inf on one side only fail, either side
    max_abs, max_rel, problem = parity.compare(e, np.zeros(5), rtol=1e-4, atol=1e-5)
    assert "4 of 5" in problem and max_abs == max_rel == np.inf
    _, _, problem = parity.compare(np.zeros(3), np.zeros(4), rtol=1e-4, atol=1e-5)
    assert problem.startswith("shape")


def test_parity_float64_in_process_skips_jax_without_x64(capsys):
    jax = pytest.importorskip("jax")
    if not JAX_OK or jax.config.jax_enable_x64:
        pytest.skip("needs jax with 64-bit mode off")
    assert parity.parity(["mlp"], ["jax"], dtype="float64") == 1  # jax named: it must run
    text = capsys.readouterr().out
    assert "skipped jax: float64 needs jax's 64-bit mode" in text
    assert "parity: FAILED, backend 'jax' was asked for" in text
    assert not jax.config.jax_enable_x64  # in-process parity never flips the global switch


# ----------------------------------------------------------------------------- summary
def _ident(x):
    return x, lambda dy: dy


def test_summary_of_a_saved_model(tmp_path):
    path = tmp_path / "model.safetensors"
    with wf.use_backend("numpy"):
        model = wf.Sequential([Dense(4, "relu"), Dense(2)], seed=0).build((None, 3))
        wf.save_model(model, str(path))
    out = cli("summary", str(path))
    assert out.returncode == 0, out.stderr
    first, counters, rest = out.stdout.split("\n", 2)
    assert first.startswith("kind: model (architecture, weights, optimizer state")
    assert counters == "counters: epochs 0, steps 0"
    assert rest == model.summary(print_fn=lambda s: None) + "\n"
    assert "dense_0 (Dense)" in out.stdout and "Total params: 26" in out.stdout


def test_summary_of_weights_only_files(tmp_path):
    from safetensors.numpy import save_file

    user_fn = tmp_path / "user_fn.safetensors"  # a user activation: no config can be written
    with wf.use_backend("numpy"):
        wf.Sequential([Dense(4, activation=_ident)], seed=0).build((None, 3)).save_weights(user_fn)
    plain = tmp_path / "plain.safetensors"  # written by another tool
    save_file({"w": np.ones((2, 2), np.float32)}, str(plain))
    for path, kind in ((user_fn, "kind: weights"), (plain, "kind: safetensors")):
        out = cli("summary", str(path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(kind), out.stdout
        assert "no architecture: build the model in code" in out.stdout
    assert "dense_0/W  float32  (3, 4)" in cli("summary", str(user_fn)).stdout


def test_summary_of_broken_or_missing_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\xffnot a safetensors file at all" * 3)
    out = cli("summary", str(garbage))
    assert out.returncode == 2
    assert "is not a safetensors file" in out.stderr and "Traceback" not in out.stderr
    out = cli("summary", str(tmp_path / "missing.safetensors"))
    assert out.returncode == 2
    assert "No such file" in out.stderr and "Traceback" not in out.stderr

"""Before and after: wframe's rows timed on two checkouts of wframe, in the same rounds.

With ``--baseline PATH`` (``python -m wframe bench``, ``benchmarks/bench_fit.py``) every wframe
row of the run is timed twice: by this checkout (the row's own label) and by the checkout at
``PATH`` (the label plus ``" before"``; ``PATH`` is the folder holding its ``wframe/``
package). Each checkout's rows run in a worker process of its own: this checkout's
:mod:`wframe.bench.worker` run by ``python -c`` with the working directory and ``PYTHONPATH``
at that checkout, so ``import wframe`` there is that checkout's (checked at start). The
references and peers stay in this process; all rows take turns in the same rounds
(:class:`~wframe.bench.timing.Timer`). A worker times each call with its own clock around the
call, which synchronizes, so the pipe adds nothing to either side. ``after / before`` is the
median over rounds of the paired round medians, as every other ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import wframe
from wframe.bench import worker
from wframe.bench.timing import Row, Timed, ratio
from wframe.bench.workloads import Workload

BEFORE = " before"
# Runs the worker file by path: its folder is not put on sys.path (it would shadow modules).
_RUN = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


def root_of(path: str | Path) -> Path:
    """The checkout folder of ``path`` (which holds ``wframe/__init__.py``), or a
    ``ValueError`` that names what was expected."""
    root = Path(path).expanduser().resolve()
    if not (root / "wframe" / "__init__.py").is_file():
        raise ValueError(
            f"{path} holds no wframe/__init__.py; expected the folder of a wframe checkout "
            "(the one holding its wframe/ package)"
        )
    return root


class Worker:
    """A worker process on the checkout ``root``: started at the first :meth:`ask`."""

    def __init__(self, root: Path):
        self.root, self.proc, self.wframe = root, None, None

    def ask(self, **msg) -> dict:
        """Send ``msg``, return the reply; a ``RuntimeError`` when the worker failed or died."""
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"worker on {self.root}: {reply['error']}")
        return reply

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker on {self.root} exited (status {self.proc.wait()})")
        return json.loads(line)

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RUN, worker.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=self.root,
            env=env,
        )
        self.wframe = self._reply()["wframe"]
        if Path(self.wframe).resolve() != self.root / "wframe" / "__init__.py":
            self.close()
            raise RuntimeError(f"the worker for {self.root} imported wframe from {self.wframe}")

    def close(self) -> None:
        if self.proc is None:
            return
        self.proc.stdin.close()  # end of input ends the worker
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Trees:
    """This checkout's worker and the baseline's; a context manager that closes both."""

    def __init__(self, baseline: str | Path):
        after = Path(wframe.__file__).resolve().parent.parent
        self.workers = {"": Worker(after), BEFORE: Worker(root_of(baseline))}
        self.count = 0

    def __enter__(self) -> Trees:
        return self

    def __exit__(self, *exc) -> None:
        for w in self.workers.values():
            w.close()

    def rows(self, w: Workload, ours: list[Row]) -> list[Row]:
        """Each of ``ours`` (wframe's rows of ``w``) twice, this checkout's and the baseline's,
        both in worker processes; same references."""
        out = []
        for row in ours:
            for suffix, wk in self.workers.items():
                self.count += 1
                make = self._maker(wk, f"r{self.count}", w, row)
                extra = {**row.extra, "remote": True}
                out.append(Row(row.label + suffix, row.impl, row.backend, make, row.ref, extra))
        return out

    def _maker(self, wk: Worker, key: str, w: Workload, row: Row):
        def make():
            spec = {"workload": asdict(w), "backend": row.backend, **row.extra}
            wk.ask(op="setup", id=key, **spec)
            return lambda: Timed(**wk.ask(op="run", id=key))

        return make

    def reset(self) -> None:
        """Forget the rows made so far (their models and data) in the running workers."""
        for wk in self.workers.values():
            if wk.proc is not None and wk.proc.poll() is None:
                wk.ask(op="reset")  # a dead worker's rows fail, noted, at their set-up

    def describe(self) -> dict:
        """For the JSON: each tree's folder, ``HEAD`` commit and the ``wframe`` it imported."""
        return {
            ("after" if not k else k.strip()): {
                "root": str(p.root),
                "head": _head(p.root),
                "wframe": p.wframe,
            }
            for k, p in self.workers.items()
        }


def _head(root: Path) -> str | None:
    """The checkout's ``HEAD`` commit (its working tree may differ), where git can tell."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def after_before(records: list[dict]) -> list[dict]:
    """For each row timed on both trees: ``after / before``, median (min, max) over rounds."""
    index = {(r["workload"], r["mode"], r["runner"]): r for r in records}
    out = []
    for r in records:
        if not r["runner"].endswith(BEFORE):
            continue
        after = index.get((r["workload"], r["mode"], r["runner"][: -len(BEFORE)]))
        if after is None:
            continue
        med, lo, hi = ratio(after["round_ms"], r["round_ms"])
        out.append(
            {
                "workload": r["workload"],
                "mode": r["mode"],
                "runner": after["runner"],
                "after_ms": after["median_ms"],
                "before_ms": r["median_ms"],
                "ratio": med,
                "ratio_min": lo,
                "ratio_max": hi,
            }
        )
    return out


def markdown(ratios: list[dict], trees: dict) -> str:
    """The after/before table and which trees the two are."""
    lines = [
        "",
        "After / before: wframe's rows on this checkout (after) and on --baseline (before)",
        "",
        "| workload | mode | runner | after ms | before ms | after / before (min–max) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in ratios:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['runner']} | {r['after_ms']:.3f} "
            f"| {r['before_ms']:.3f} | {r['ratio']:.3f}x ({r['ratio_min']:.3f}–"
            f"{r['ratio_max']:.3f}) |"
        )
    lines.append("")
    for name, t in trees.items():
        lines.append(f"- {name}: {t['root']} (HEAD {t['head']}; imported {t['wframe']})")
    lines.append(
        "- each tree's wframe rows ran in a worker process of its own, in the same rounds as "
        "the references (this process); ratio: median over rounds of after / before round "
        "medians"
    )
    return "\n".join(lines) + "\n"

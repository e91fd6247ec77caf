"""What a run writes: the environment, JSON records, a Markdown table, a PNG chart of ratios."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from wframe.bench.timing import ratio
from wframe.bench.workloads import TARGETS

_VERSIONS = ("wframe", "numpy", "jax", "jaxlib", "optax", "torch", "keras", "cupy", "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Where the numbers come from: CPU, GPU, versions, BLAS and thread pools, thread env vars.
    Call it after the runs, so that every library's thread pool is loaded and listed."""
    env: dict = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if hasattr(os, "sched_getaffinity"):
        env["cpus_usable"] = len(os.sched_getaffinity(0))
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    env["versions"] = versions
    prefixes = ("OPENBLAS_", "OMP_", "MKL_", "XLA_", "KERAS_BACKEND")
    env["thread_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefixes)}
    if importlib.util.find_spec("threadpoolctl"):
        from threadpoolctl import threadpool_info

        keys = ("internal_api", "num_threads", "version", "threading_layer", "architecture")
        env["threadpools"] = [
            {**{k: p.get(k) for k in keys}, "library": os.path.basename(p.get("filepath", ""))}
            for p in threadpool_info()
        ]
    gpus = []
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        env["jax_devices"] = [str(d) for d in jax.devices()]
        gpus += [getattr(d, "device_kind", str(d)) for d in jax.devices() if d.platform != "cpu"]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            gpus.append(torch.cuda.get_device_name(0))
    if "cupy" in sys.modules:
        cupy = sys.modules["cupy"]
        gpus.append(cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
    env["gpu"] = sorted(set(gpus)) or None
    return env


#: The status of every target of a ``--quick`` run: two short rounds on tiny shapes are noise.
QUICK_STATUS = "not judged (--quick: a smoke test)"
QUICK_NOTE = (
    "**--quick is a smoke test**: tiny shapes and 2 short rounds show that every row runs; its "
    "times and ratios are not measurements to quote, and no target is judged. Run without "
    "--quick for numbers."
)


def add_ratios(records: list[dict]) -> None:
    """Each record's ratio to its reference row (same workload and mode), median and spread;
    none where either row was timed by its cold call alone (compilation included: a ratio
    would compare a compile with a step)."""
    index = {(r["workload"], r["mode"], r["runner"]): r for r in records}
    for r in records:
        ref = index.get((r["workload"], r["mode"], r["ref"])) if r["ref"] else None
        r["ratio"] = r["ratio_min"] = r["ratio_max"] = None
        if ref is None:
            r["ref"] = None
            continue
        if r.get("cold_only") or ref.get("cold_only"):
            continue
        r["ratio"], r["ratio_min"], r["ratio_max"] = ratio(r["round_ms"], ref["round_ms"])


def unjudged(verdicts: list[dict]) -> list[dict]:
    """``verdicts`` of a ``--quick`` run: ratios kept, every measured status
    :data:`QUICK_STATUS` (no MET or MISSED from two rounds of noise)."""
    return [{**t, "status": QUICK_STATUS} if t["ratio"] is not None else t for t in verdicts]


def targets(records: list[dict]) -> list[dict]:
    """Each target's verdict. ``met``: the median ratio is within the limit; ``missed within
    noise``: it is not, but the best round's ratio is; ``MISSED``: even the best round misses."""
    index = {(r["workload"], r["mode"], r["runner"]): r for r in records}
    out = []
    for wl, mode, row, ref, limit in TARGETS:
        a, b = index.get((wl, mode, row)), index.get((wl, mode, ref))
        t = {"workload": wl, "mode": mode, "runner": row, "ref": ref, "limit": limit}
        t.update(ratio=None, ratio_min=None, ratio_max=None, status="not measured")
        if a is not None and b is not None and (a.get("cold_only") or b.get("cold_only")):
            t["status"] = "not measured (timed by a cold call alone)"
        elif a is not None and b is not None:
            med, lo, hi = ratio(a["round_ms"], b["round_ms"])
            t.update(ratio=med, ratio_min=lo, ratio_max=hi)
            t["status"] = (
                "met" if med <= limit else "missed within noise" if lo <= limit else "MISSED"
            )
        out.append(t)
    return out


def _num(v, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(records: list[dict], verdicts: list[dict], doc: dict) -> str:
    """The table (one line per runner, workload and mode), then targets, checks and notes."""
    lines = [
        *([QUICK_NOTE, ""] if doc["settings"].get("quick") else []),
        "| workload | mode | runner | median ms | min–max ms | cold ms | samples/s | GFLOP/s "
        "| % peak | RSS MB | ratio (min–max) | vs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *map(_table_row, records),
        "",
        _legend(doc["settings"], doc["gemm_peak"]),
        "",
        *map(_verdict_line, verdicts),
    ]
    lines += [
        f"- check {r['workload']} {r['mode']}: {r['runner']} {r['check']}"
        for r in records
        if r.get("check", "").endswith("DIFFERS")
    ]
    lines += [f"- note: {n}" for n in doc["notes"]]
    lines.append(_machine_line(doc["environment"], doc["settings"]))
    return "\n".join(lines) + "\n"


def _table_row(r: dict) -> str:
    rat = ""
    if r["ratio"] is not None:
        rat = f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})"
    spread = f"{r['min_ms']:.3f}–{r['max_ms']:.3f}" if r.get("in_rounds", True) else "1 call"
    spread = "cold call only" if r.get("cold_only") else spread
    mem = r["memory"]
    rss = _num(mem.get("device_peak_mb") or mem.get("device_mb") or mem.get("rss_mb"), ".0f")
    if mem.get("rss_growth_mb") is not None and "device_mb" not in mem:
        rss += f" (+{max(mem['rss_growth_mb'], 0):.0f})"
    return (
        f"| {r['workload']} | {r['mode']} | {r['runner']} | {r['median_ms']:.3f} "
        f"| {spread} | {r['cold_ms']:.1f} "
        f"| {_num(r['samples_per_s'], ',.0f')} | {_num(r['gflops'], '.1f')} "
        f"| {_num(r['peak_fraction'] and 100 * r['peak_fraction'], '.0f')} "
        f"| {rss} | {rat} | {r['ref'] or ''} |"
    )


def _legend(s: dict, gemm_peak: dict) -> str:
    """What the table's columns mean, under the run's settings ``s``."""
    peaks = ", ".join(f"{k} {v['gflops']:.0f}" for k, v in gemm_peak.items())
    return (
        f"{s['rounds']} rounds; step: ms per train step on a fixed batch (forward, gradient, "
        "update); epoch: ms per `fit` epoch (shuffle, gather, steps, loss read). median/min/max "
        "over the rounds' medians; cold: the first call (compilation included); ratio: median "
        "(min–max) over rounds of row / `vs` row round medians. GFLOP/s counts matmuls and "
        f"convolutions; % peak: of the {s['gemm_n']}² float32 GEMM peak measured in this run "
        f"(GFLOP/s: {peaks}). RSS: the process's resident MiB after the row's set-up and first "
        "calls (+ its growth during them); on a GPU, the device memory in use."
    )


def _verdict_line(t: dict) -> str:
    got = (
        ""
        if t["ratio"] is None
        else (f"{t['ratio']:.2f}x (rounds {t['ratio_min']:.2f}–{t['ratio_max']:.2f}) ")
    )
    mark = {"met": "MET", "missed within noise": "missed (within noise)"}.get(
        t["status"], t["status"]
    )
    return (
        f"- target {t['workload']} {t['mode']}: {t['runner']} <= {t['limit']:.2f}x "
        f"{t['ref']}: {got}{mark}"
    )


def _machine_line(env: dict, s: dict) -> str:
    pools = "; ".join(
        f"{p['library'] or p['internal_api']} {p['num_threads']} threads"
        for p in env.get("threadpools", [])
    )
    vers = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    load = s.get("loadavg_1min_start_end") or [None, None]
    load_text = "" if None in load else f"; 1-min load {load[0]:.1f} at start, {load[1]:.1f} at end"
    return (
        f"- machine: {env['cpu']}, {env.get('cpus_usable', env['cpus'])} usable CPUs, "
        f"GPU {env['gpu'] or 'none'}; {vers}; {pools}{load_text}; wall {s['wall_s']:.0f} s"
    )


def chart(records: list[dict], path: Path, quick: bool = False) -> bool:
    """A horizontal bar chart of the ratios (log scale, 1 = the reference); False without
    matplotlib. Rows timed by their cold call alone have no ratio and are left out; a
    ``quick`` run's chart says in its title that it is a smoke test."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["ratio"] is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh(
        ys,
        [r["ratio"] for r in rows],
        color=["C0" if r["impl"] == "wframe" else "C7" for r in rows],
    )
    lo = [r["ratio"] - r["ratio_min"] for r in rows]
    hi = [r["ratio_max"] - r["ratio"] for r in rows]
    ax.errorbar([r["ratio"] for r in rows], ys, xerr=[lo, hi], fmt="none", ecolor="k", lw=0.8)
    ax.set_yticks(
        list(ys), [f"{r['workload']} {r['mode']}: {r['runner']}" for r in rows], fontsize=7
    )
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("time / reference of the same backend (lower is faster)")
    if quick:
        ax.set_title("--quick: a smoke test, not measurements to quote", fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, no empty margins
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, doc: dict, table: str) -> list[Path]:
    """``bench.json``, ``bench.md`` and (with matplotlib) ``bench.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md"]
    paths[0].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    paths[1].write_text(table)
    if chart(doc["records"], out / "bench.png", quick=bool(doc["settings"].get("quick"))):
        paths.append(out / "bench.png")
    return paths

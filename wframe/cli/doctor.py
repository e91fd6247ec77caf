"""Report what wframe can use on this machine: package versions, which backends work (and, for
those that do not, why and how to install them), JAX's devices, the CUDA driver and runtime
seen by CuPy, and the BLAS library NumPy uses with its thread count.

Nothing here fails: every probe that cannot run says so in its entry. Exit status 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from typing import Any

from wframe import backends
from wframe.backends import jit_cache, threads

HELP = "report versions, backends, devices, CUDA and BLAS (exit 0)"

#: Distributions reported, in order; cupy ships under several names.
PACKAGES = ("wframe", "numpy", "jax", "jaxlib", "cupy", "optax", "safetensors", "array-api-compat")
_CUPY_DISTRIBUTIONS = ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x")
NOT_INSTALLED = "not installed"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def collect() -> dict[str, Any]:
    """Everything ``doctor`` reports, as a JSON-ready dict."""
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "backends": _backends(),
        # BLAS before JAX: the libraries loaded so far are NumPy's own.
        "blas": _blas(),
        "jax": _jax(),
        "cuda": _cuda(),
    }


def _version(name: str) -> str:
    names = _CUPY_DISTRIBUTIONS if name == "cupy" else (name,)
    for dist in names:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if dist == name else f"{version} ({dist})"
    return NOT_INSTALLED


def _backends() -> dict[str, dict[str, Any]]:
    out = {}
    for name in backends.registered():
        entry: dict[str, Any] = {"available": False, "reason": "", "install": ""}
        try:
            cls = backends.backend_class(name)
            ok, why = cls.is_available()
            entry.update(available=bool(ok), reason="" if ok else why)
            entry["install"] = "" if ok else cls.install
        except Exception as e:  # a broken third-party registration: report it, go on
            entry["reason"] = f"{type(e).__name__}: {e}"
        out[name] = entry
    return out


def _jax() -> dict[str, Any]:
    if importlib.util.find_spec("jax") is None:
        return {"devices": [], "note": "jax is not installed"}
    try:
        import jax

        return {
            "devices": [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()],
            "default_backend": jax.default_backend(),
            "x64": bool(jax.config.jax_enable_x64),
            # What the jax backend gives JAX when made (a cache JAX already has wins).
            "compilation_cache": str(jax.config.jax_compilation_cache_dir or "")
            or str(jit_cache.cache_dir() or "off (WFRAME_JIT_CACHE=0)"),
        }
    except Exception as e:  # jax installed but broken (jaxlib mismatch, plugin errors)
        return {"devices": [], "note": f"jax cannot list devices: {type(e).__name__}: {e}"}


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"  # 12040 -> "12.4", as nvidia-smi prints it


def _cuda() -> dict[str, Any]:
    if importlib.util.find_spec("cupy") is None:
        return {"driver": None, "runtime": None, "note": "no CUDA (cupy is not installed)"}
    try:
        import cupy

        runtime = cupy.cuda.runtime
        return {
            "driver": _cuda_version(runtime.driverGetVersion()),
            "runtime": _cuda_version(runtime.runtimeGetVersion()),
            "devices": runtime.getDeviceCount(),
        }
    except Exception as e:  # CUDA errors share no base class; no driver is the common one
        return {"driver": None, "runtime": None, "note": f"no CUDA: {type(e).__name__}: {e}"}


def _policy() -> str:
    """The BLAS thread policy of wframe's own host calls (:mod:`wframe.backends.threads`)."""
    n = os.environ.get("WFRAME_NUM_THREADS", "auto")
    if n.strip().lower() not in ("", "auto"):
        return f"{n} thread(s) in fit/evaluate/predict (WFRAME_NUM_THREADS)"
    return (
        f"1 thread when params x batch rows < {threads.SMALL_WORK:.0e}, else BLAS's own "
        "(WFRAME_NUM_THREADS or wf.num_threads(n) to override)"
    )


def _blas() -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"numpy_build": None, "libraries": [], "policy": _policy()}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_build"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # the layout of show_config's dict is not a stable API
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        out["note"] = (
            "threadpoolctl is not installed, so the thread count is unknown (pip install "
            "threadpoolctl, or scikit-learn, which ships it)"
        )
        return out
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            keys = ("internal_api", "version", "num_threads", "threading_layer", "filepath")
            out["libraries"].append({k: lib.get(k) for k in keys})
    return out


# ----------------------------------------------------------------------------- the table
def format_table(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`collect`'s report: two aligned columns."""
    rows: list[tuple[str, str]] = []
    py = report["python"]
    rows += [("Python", f"{py['version']} ({py['executable']})"), ("Platform", report["platform"])]
    rows += [(name, version) for name, version in report["packages"].items()]
    rows.append(("", ""))
    for name, b in report["backends"].items():
        if b["available"]:
            state = "ok"
        else:
            state = f"unavailable: {b['reason']}"
            if b["install"] and b["install"] not in b["reason"]:
                state += f"; install: {b['install']}"
        rows.append((f"backend {name}", state))
    jax = report["jax"]
    rows.append(("JAX devices", ", ".join(jax["devices"]) or jax.get("note", "none")))
    if "x64" in jax:
        rows.append(("JAX x64", "on" if jax["x64"] else "off"))
    if "compilation_cache" in jax:
        rows.append(("JAX compile cache", jax["compilation_cache"]))
    cuda = report["cuda"]
    if cuda.get("driver"):
        rows.append(
            (
                "CUDA",
                f"driver {cuda['driver']}, runtime {cuda['runtime']}, {cuda['devices']} device(s)",
            )
        )
    else:
        rows.append(("CUDA", cuda["note"]))
    blas = report["blas"]
    if blas["numpy_build"]:
        rows.append(("NumPy BLAS", f"built with {blas['numpy_build']}"))
    for lib in blas["libraries"]:
        threads = f"{lib['num_threads']} thread{'s' if lib['num_threads'] != 1 else ''}"
        text = f"{lib['internal_api']} {lib['version']}, {threads} ({lib['filepath']})"
        rows.append(("BLAS loaded", text))
    if "note" in blas:
        rows.append(("BLAS threads", blas["note"]))
    rows.append(("wframe BLAS policy", blas["policy"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)

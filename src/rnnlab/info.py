"""`rnnlab info`: what rnnlab runs on here, and why.

The speed of the compiled loops depends on the host in ways a user cannot see: which BLAS
their per-step products call (measured per host, rnnlab._blaschoice), the kernel that BLAS
picked for this CPU (an environment variable can hold OpenBLAS to an older one), the
threads, the vector width the kernels were compiled for, and whether numba's cache already
holds them. This prints all of it, so that a slow run can be explained and a benchmark
names its machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from rnnlab import _blaschoice, settings
from rnnlab._argparse import Parser

FORCING = {
    "OPENBLAS_CORETYPE": "holds OpenBLAS to the named core type's kernel",
    "OPENBLAS_L2_SIZE": "changes OpenBLAS's blocking",
    "MKL_ENABLE_INSTRUCTIONS": "caps the instruction set MKL may use",
    "MKL_CBWR": "makes MKL pick reproducible, usually slower, code paths",
    "MKL_DEBUG_CPU_TYPE": "tells MKL to take another CPU's code path",
}


def _cpu() -> dict[str, Any]:
    info = _blaschoice.cpu()
    info["cores"] = settings.cores()
    info["logical_cpus"] = os.cpu_count()
    return info


def _libraries() -> list[dict[str, Any]] | dict[str, Any]:
    """The BLAS and OpenMP libraries loaded in this process, with the kernel each runs
    (threadpoolctl's `architecture`), or NumPy's build configuration without threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        import numpy as np

        config = np.show_config(mode="dicts")
        note = "install threadpoolctl to see the loaded libraries and their kernels"
        return {"numpy_build": config.get("Build Dependencies", {}).get("blas"), "note": note}
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "filepath")  # fmt: skip
    found = [{k: lib.get(k) for k in keep if lib.get(k) is not None}
             for lib in threadpoolctl.threadpool_info()]  # fmt: skip
    for lib in found:  # threadpoolctl names OpenBLAS's kernel only: MKL's, from MKL itself
        if lib.get("internal_api") == "mkl" and "architecture" not in lib and "filepath" in lib:
            import ctypes

            from rnnlab import _mkl

            try:  # (loaded already: the same handle)
                kernel = _mkl.code_path(ctypes.CDLL(lib["filepath"]))
            except OSError:
                kernel = None
            if kernel:
                lib["architecture"] = kernel
    return found


def _numba_cache(kernels: Any) -> str:
    """Where numba keeps the compiled kernels: the folder a cached kernel's cache uses
    (beside the package, or numba's fallback under ~/.cache/numba where the package's folder
    is read-only), else numba's setting or the package's __pycache__."""
    import numba

    try:
        return str(kernels.tanh_into._cache._cache_path)
    except AttributeError:  # (numba's internals moved)
        # (type: ignore: numba sets its config's attributes at import, from the environment)
        return numba.config.CACHE_DIR or os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(kernels.__file__), "__pycache__")


def _loops_off_why() -> str:
    """Why the compiled loops are off: the setting, numba missing, or numba failing to load."""
    if settings.current().no_numba:
        return "RNNLAB_NO_NUMBA is set"
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        if getattr(exc, "name", None) == "numba":
            return "numba is not installed; install the `fast` extra"
        return f"numba does not load: {exc}"
    except Exception as exc:  # noqa: BLE001  (a broken installation raises anything)
        return f"numba does not load: {exc}"
    return "the kernels did not load (rnnlab.fast.probe)"


def gather() -> dict[str, Any]:
    """Everything `rnnlab info` prints, as a dict (the --json output)."""
    from rnnlab import fast
    from rnnlab.fast import parallel

    choice = _blaschoice.choice()
    out: dict[str, Any] = {
        "rnnlab": _blaschoice.version("rnnlab"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _blaschoice.version(p) for p in ("numpy", "numba", "scipy", "mkl")},
        "cpu": _cpu(),
        "threads": {
            "rnnlab": parallel.num_threads(),
            "split": parallel.enabled(),
            "spin_seconds": parallel.spin_seconds(),
        },
        "blas_choice": {
            "blas": choice.blas,
            "why": choice.why,
            "cache": choice.cache,
            "cache_error": choice.cache_error,
            "timings_us": choice.timings,
            "tiles": choice.tiles,
            "tiles_why": choice.tiles_why,
            "tiles_in_place_rows": choice.tiles_in_place_rows,
            "large": choice.large,
            "large_why": choice.large_why,
        },
        "forced_kernels": {
            k: {"value": v, "effect": FORCING[k]} for k, v in _blaschoice.forcing().items()
        },
        "compiled_loops": fast.available(),
        "compiled_loops_why": _loops_off_why() if not fast.available() else "",
    }
    if out["compiled_loops"]:
        import numba

        from rnnlab.fast import blas, kernels

        out["kernels"] = {
            "blas": blas.NAME,
            "vector_width": kernels.VECTOR_WIDTH or "LLVM's choice",
            # (type: ignore: numba sets its config's attributes at import, from the environment)
            "numba_cache": _numba_cache(kernels),
            "numba": numba.__version__,
        }
    out["libraries"] = _libraries()
    return out


def _timing_lines(timings: dict[str, list[float]], suffix: str, shapes: list[str]) -> list[str]:
    """One line per library whose timings key ends in `suffix` ("" for the per-step shapes:
    keys without a suffix)."""
    return [f"  {lib.removesuffix(suffix):6s} µs at {', '.join(shapes)}: "
            + " ".join(f"{t:.0f}" for t in times)
            for lib, times in timings.items()
            if (lib.endswith(suffix) if suffix else " " not in lib)]  # fmt: skip


def _text(info: dict[str, Any]) -> list[str]:
    cpu = info["cpu"]
    lines = [
        f"rnnlab {info['rnnlab']} on Python {info['python']} ({info['platform']})",
        f"CPU: {cpu['vendor'] or '?'} {cpu['model']} (family {cpu['family']}, model "
        f"{cpu['model_number']}), {cpu['cores']} cores, {' '.join(cpu['flags']) or 'no AVX2'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
        f"threads: {info['threads']['rnnlab']} (batch split "
        f"{'on' if info['threads']['split'] else 'off'}"
        + (f"; a worker waits busily {info['threads']['spin_seconds'] * 1e3:g} ms for its next "
           "part, then sleeps (RNNLAB_SPIN)" if info["threads"]["spin_seconds"] else
           "; a worker sleeps at once between parts" + _spin_off_why()
           if info["threads"]["split"] else "")
        + ")",
    ]
    b = info["blas_choice"]
    lines.append(f"loops' BLAS: {b['blas']} ({b['why']})")
    timings = b["timings_us"] or {}
    lines += _timing_lines(timings, "", [f"{m}x{k}x{n}" for m, k, n in _blaschoice.SHAPES])
    lines += _timing_lines(timings, " in place", [f"{m}x{k}x{n}(BPTT)"
                                                  for m, k, n in _blaschoice.IN_PLACE_SHAPES])
    lines.append(f"large products' BLAS (input projection, weight gradients): {b['large']} "
                 f"({b['large_why']})")  # fmt: skip
    lines += _timing_lines(timings, " large", [f"{m}x{k}x{n}{'(Aᵀ)' if transposed else ''}"
                                               for m, k, n, transposed in _blaschoice.LARGE_SHAPES])
    if b["cache"]:
        lines.append(f"  cached in {b['cache']}")
    elif b["cache_error"]:
        lines.append(f"  not cached, so measured in every process: {b['cache_error']}")
    lines.append(f"loops' own product kernel (tiles): {'on' if b['tiles'] else 'off'} "
                 f"({b['tiles_why']})")  # fmt: skip
    if info["compiled_loops"]:
        k = info["kernels"]
        lines.append(f"compiled loops: on, products on {'tiles, else ' if b['tiles'] else ''}"
                     f"{k['blas']}, vector width "
                     f"{k['vector_width']}, numba cache {k['numba_cache']}")  # fmt: skip
    else:
        lines.append(f"compiled loops: off, the NumPy loop ({info['compiled_loops_why']})")
    libs = info["libraries"]
    if isinstance(libs, list):
        if not libs:
            lines.append("loaded: no BLAS or OpenMP library found by threadpoolctl")
        for lib in libs:
            lines.append(f"loaded: {lib.get('internal_api')}"
                         + (f" {lib['version']}" if lib.get("version") else "")
                         + f" ({lib.get('user_api')}, {lib.get('num_threads')} threads"
                         + (f", kernel {lib['architecture']}" if lib.get("architecture") else "")
                         + (f", threading layer {lib['threading_layer']}"
                            if lib.get("threading_layer") else "")
                         + f") {lib.get('filepath', '')}")  # fmt: skip
    else:
        lines.append(f"NumPy's BLAS: {libs.get('numpy_build')} ({libs['note']})")
    for name, v in info["forced_kernels"].items():
        lines.append(f"warning: {name}={v['value']} {v['effect']}: unset it for benchmarks")
    return lines


def _spin_off_why() -> str:
    if settings.current().spin == 0:
        return " (RNNLAB_SPIN=0)"
    return " (no time-stamp counter to spin by on this CPU)"


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="rnnlab info", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = ap.parse_args(argv)
    except ValueError as e:  # said in one line, as by the rnnlab command
        print(f"rnnlab info: error: {e}", file=sys.stderr)
        return 2
    info = gather()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print("\n".join(_text(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU bench, ALS section (issue 19): s/iteration, GPU/CPU speed-up and loss at Last.fm-1K scale.

On bench/als.py's ``lastfm1k`` matrix (992 users x 500,000 items, >= 15M non-zeros; same generator,
same seed), factors 64, regularization 0.1, 3 CG steps, 5 iterations, one process, in this order:

* ``cpu``:              raw ``implicit.cpu.als`` (CG) on all of this machine's cores: the reference;
* ``raw-implicit-gpu``: raw ``implicit.gpu.als.AlternatingLeastSquares.fit``;
* ``implicit-gpu``:     the musicrec train step, ``musicrec.als.backends.fit(backend="implicit-gpu")``;
* ``torch-cuda``:       the musicrec train step on its torch CG solver on CUDA.

s/iteration is the median of the per-iteration times without the first (CUDA start-up, warm-up).
Each GPU run's loss (``musicrec.als.backends.loss`` of its final factors, per cell) must be within
5 % of the CPU's, else the check is a FAIL. A GPU run that cannot start (implicit's CUDA module did
not load, no CUDA) is recorded as skipped with the reason, never replaced by another figure.

``--cpu-smoke``: a tiny matrix, and the three GPU runs stand in on the CPU (raw implicit CPU,
implicit-cpu, torch-cpu), each marked ``stand_in``: this only proves the code path and the checks.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Results, log  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "include"))
import als as als_bench  # noqa: E402 - bench/als.py: the same matrix generator and constants

LOSS_TOLERANCE = 0.05
SPEEDUP_TARGET = 10.0
SMOKE_SCALE = (60, 800, 3_000, 0.8, 10)  # users, items, min nnz, zipf exponent, offset
GPU_RUNS = ["raw-implicit-gpu", "implicit-gpu", "torch-cuda"]
STAND_IN = {"raw-implicit-gpu": "raw-implicit-cpu", "implicit-gpu": "implicit-cpu", "torch-cuda": "torch-cpu"}


class Stamps:
    """Per-iteration wall times taken in the fit's callback after a device-wide CUDA sync.

    implicit's GPU fit times each iteration before its kernels are known to be done, so its own
    figures can under-count; torch.cuda.synchronize() (cudaDeviceSynchronize) waits for implicit's
    kernels too (same process, same primary context). The first interval includes the fit's set-up
    (the copy of the matrix to the device) and is left out of the median like every warm-up."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.reported: list[float] = []
        self.t0 = time.perf_counter()
        self.stamps: list[float] = []

    def __call__(self, _iteration: int, secs: float, *_rest) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        self.reported.append(secs)

    def per_iteration(self) -> list[float]:
        edges = [self.t0, *self.stamps]
        return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


def raw_implicit_gpu(conf, iterations: int):
    """implicit's own GPU model, as a user of the library would call it (the ceiling for the train step)."""
    import numpy as np
    from implicit.gpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=als_bench.FACTORS, regularization=als_bench.REGULARIZATION,
                                    iterations=iterations, random_state=als_bench.RANDOM_STATE,
                                    calculate_training_loss=False)
    model.cg_steps = als_bench.CG_STEPS
    stamps = Stamps(cuda=True)
    model.fit(conf, show_progress=False, callback=stamps)
    seconds = time.perf_counter() - stamps.t0
    cpu = model.to_cpu()
    f = als_bench.FACTORS
    return ({"seconds": seconds, "per_iteration": stamps.per_iteration(), "reported_per_iteration": stamps.reported},
            np.ascontiguousarray(cpu.user_factors[:, :f]), np.ascontiguousarray(cpu.item_factors[:, :f]))


def musicrec_fit(conf, iterations: int, backend: str):
    """The project's train step, ``musicrec.als.backends.fit`` (as bench/als.py calls it), with synced stamps."""
    from musicrec.als import backends

    stamps = Stamps(cuda=backend in ("implicit-gpu", "torch-cuda"))
    result = backends.fit(conf, factors=als_bench.FACTORS, iterations=iterations,
                          regularization=als_bench.REGULARIZATION, cg_steps=als_bench.CG_STEPS,
                          random_state=als_bench.RANDOM_STATE, backend=backend, callback=stamps)
    return ({"seconds": result.seconds, "per_iteration": stamps.per_iteration(),
             "reported_per_iteration": list(result.seconds_per_iteration), "chosen": result.backend,
             "reason": result.reason}, result.user_factors, result.item_factors)


def available(name: str) -> tuple[bool, str]:
    from musicrec.als import backends

    if name in ("raw-implicit-gpu", "implicit-gpu"):
        return backends.implicit_gpu_available()
    return backends.torch_cuda_available()


def one_run(conf, iterations: int, name: str) -> dict:
    """Fit once with ``name`` (a concrete CPU or GPU run) and return its figures and loss."""
    import numpy as np

    from musicrec.als import backends

    if name == "raw-implicit-cpu":
        fig, x, y = als_bench.run_raw_implicit(conf, iterations)
    elif name == "raw-implicit-gpu":
        fig, x, y = raw_implicit_gpu(conf, iterations)
    else:
        fig, x, y = musicrec_fit(conf, iterations, name)
    fig["s_per_iteration"] = als_bench.per_iteration(fig["per_iteration"])
    fig["total_over_iterations"] = fig["seconds"] / iterations  # includes copies to/from the device
    t = time.perf_counter()
    fig["loss"] = backends.loss(conf, np.asarray(x), np.asarray(y), als_bench.REGULARIZATION)
    fig["loss_seconds"] = time.perf_counter() - t
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for als.json")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--scale", choices=["lastfm1k", "smoke"], default=None,
                        help="the matrix (default lastfm1k; smoke with --cpu-smoke)")
    args = parser.parse_args()

    res = Results(args.out / "als.json", "als", args.cpu_smoke)
    d = res.data
    scale_name = args.scale or ("smoke" if args.cpu_smoke else "lastfm1k")
    scale = SMOKE_SCALE if scale_name == "smoke" else als_bench.SCALES[scale_name]
    users, items, min_nnz, exponent, offset = scale
    d["params"] = {"scale": scale_name, "factors": als_bench.FACTORS,
                   "regularization": als_bench.REGULARIZATION, "cg_steps": als_bench.CG_STEPS,
                   "iterations": args.iterations, "random_state": als_bench.RANDOM_STATE,
                   "loss_tolerance": LOSS_TOLERANCE, "speedup_target": SPEEDUP_TARGET}
    started = time.perf_counter()
    conf, info = als_bench.generate(users, items, min_nnz, exponent, offset, seed=42)
    info["gen_seconds"] = time.perf_counter() - started
    # the objective with all factors zero (sum of c_ui / cells): a loss match only means something below it
    info["zero_factor_loss"] = float(conf.data.sum(dtype="float64")) / (users * items)
    d["matrix"] = info
    log(f"ALS matrix: {users:,} users x {items:,} items, nnz {info['nnz']:,}, generated in {info['gen_seconds']:.1f} s")
    d["runs"], d["checks"] = {}, []
    res.save()

    plan = [("cpu", "raw-implicit-cpu")]
    for name in GPU_RUNS:
        if args.cpu_smoke:
            plan.append((name, STAND_IN[name]))
            continue
        ok, why = available(name)
        if ok:
            plan.append((name, name))
        else:
            d["runs"][name] = {"skipped": why}
            log(f"{name}: skipped: {why}")
    res.save()

    for name, ran in plan:
        entry: dict = {"ran": ran, "stand_in": ran != name and name != "cpu"}
        try:
            entry.update(one_run(conf, args.iterations, ran))
            log(f"{name} ({ran}): {entry['s_per_iteration']:.4f} s/iteration "
                f"(iterations {', '.join(f'{t:.3f}' for t in entry['per_iteration'])}; total {entry['seconds']:.2f} s), "
                f"loss {entry['loss']:.8g}")
        except Exception as exc:  # noqa: BLE001 - recorded; the other runs still go
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=6)
            log(f"{name} ({ran}): FAILED {entry['error']}")
        d["runs"][name] = entry
        res.save()

    cpu = d["runs"].get("cpu", {})
    for name in GPU_RUNS:
        run = d["runs"].get(name, {})
        if "loss" not in run or "loss" not in cpu:
            why = run.get("skipped") or run.get("error") or cpu.get("error") or "no figure"
            d["checks"].append({"check": f"{name} loss within {LOSS_TOLERANCE:.0%} of the CPU's", "ok": None,
                                "detail": f"not computed: {why}"})
            continue
        rel = abs(run["loss"] - cpu["loss"]) / abs(cpu["loss"])
        run["loss_rel_diff"] = rel
        run["speedup_vs_cpu"] = cpu["s_per_iteration"] / run["s_per_iteration"]
        fitted = run["loss"] < info["zero_factor_loss"]
        d["checks"].append({"check": f"{name} loss within {LOSS_TOLERANCE:.0%} of the CPU's", "ok": rel <= LOSS_TOLERANCE and fitted,
                            "detail": f"{run['loss']:.8g} vs {cpu['loss']:.8g} ({rel:.2%}; all-zero factors "
                                      f"{info['zero_factor_loss']:.8g})", "kind": "correctness"})
        d["checks"].append({"check": f"{name} >= {SPEEDUP_TARGET:g}x the CPU", "ok": run["speedup_vs_cpu"] >= SPEEDUP_TARGET,
                            "detail": f"{run['speedup_vs_cpu']:.1f}x", "kind": "target"})
    res.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())

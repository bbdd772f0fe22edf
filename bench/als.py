"""Benchmark: seconds per ALS iteration of the musicrec train step against raw ``implicit``.

Two synthetic implicit-feedback confidence matrices (users × items, CSR float32, power-law item
popularity, generated with a seeded numpy RNG, duplicate (user, item) draws summed into the count w,
confidence 1 + 40·w):

* ``lastfm1k``: 992 users × 500,000 items, >= 15M non-zeros (the Last.fm-1K user count);
* ``medium``:   50,000 users × 100,000 items, >= 10M non-zeros.

On each, with factors=64, regularization=0.1, 3 CG steps, random_state=42:

* ``raw-implicit``: ``implicit.cpu.als.AlternatingLeastSquares(use_cg=True).fit`` directly, the
  per-iteration seconds from its fit callback;
* ``implicit-cpu``: ``musicrec.als.backends.fit(backend="implicit-cpu")`` — the train step;
* ``torch-cpu``:    ``musicrec.als.backends.fit(backend="torch-cpu")``;
* ``implicit-gpu`` / ``torch-cuda``: the same, when implicit's CUDA module loaded / torch sees a GPU
  (else skipped with the reason), with the speed-up over the CPU figure of the same implementation.

s/iteration is the median of the per-iteration times, the first (warm-up) excluded when there are
>= 3 iterations. Target (issue: ALS training): musicrec train step / raw implicit <= 1.2. The final
factors' objective (``musicrec.als.backends.loss``, per cell) is printed so the backends can be seen
to reach comparable loss; peak RSS is printed per backend (Linux: VmHWM, reset between phases) and
for the whole process (``ru_maxrss``).

    python bench/als.py                               # both scales, 5 iterations
    python bench/als.py --scale medium --iterations 3 # quick
    python bench/als.py --backends raw-implicit implicit-cpu --no-loss
    python bench/als.py --repeat 3                    # interleaved runs, each backend's fastest kept

Other processes on the machine skew the figures (2 cores here: runs under a load average of 2-5 moved
the ratios by +-30-50%): the load average is printed per run, and the process CPU seconds of each fit
beside the wall time (those shift under load too, OpenMP threads spin while they wait); measure on a
quiet machine, or use ``--repeat`` to interleave the backends and keep each one's fastest run.

Figures are written as JSON to ``bench/results/als.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # implicit's recommendation; before numpy loads

import argparse
import json
import resource
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

TARGET_RATIO = 1.2
FACTORS = 64
REGULARIZATION = 0.1
CG_STEPS = 3
RANDOM_STATE = 42
ALPHA = 40.0

# name: (users, items, minimum nnz, item zipf exponent, item zipf offset)
SCALES = {
    "lastfm1k": (992, 500_000, 15_000_000, 0.8, 100),
    "medium": (50_000, 100_000, 10_000_000, 0.8, 100),
}
CPU_BACKENDS = ["raw-implicit", "implicit-cpu", "torch-cpu"]
GPU_BACKENDS = ["implicit-gpu", "torch-cuda"]
GPU_OF = {"implicit-gpu": "implicit-cpu", "torch-cuda": "torch-cpu"}


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------

_PEAK_KB = 0  # the process's high-water mark across the resets below (they reset ru_maxrss too)


def _vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Start a new phase: fold the high-water mark so far into _PEAK_KB, then reset it (Linux >= 4.0)."""
    global _PEAK_KB
    _PEAK_KB = max(_PEAK_KB, _vm_hwm_kb() or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # then each phase's figure is the process's peak so far


def peak_rss_gb() -> float:
    """The RSS high-water mark of the current phase (VmHWM since the last reset), in GB."""
    kb = _vm_hwm_kb()
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024 / 1e9


def max_rss_gb() -> float:
    """The process's peak RSS: ru_maxrss (KiB on Linux), with the peaks before the phase resets."""
    return max(_PEAK_KB, _vm_hwm_kb() or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024 / 1e9


# --------------------------------------------------------------------------------------------
# the matrix
# --------------------------------------------------------------------------------------------

def generate(users: int, items: int, min_nnz: int, exponent: float, offset: float, seed: int,
             chunk: int = 1 << 22) -> tuple[sp.csr_matrix, dict]:
    """A users × items confidence matrix with at least ``min_nnz`` distinct (user, item) pairs.

    Users' activity is log-normal, items are drawn with p_i ∝ (i + offset)^-exponent (inverse CDF),
    independently; draws go in rounds (each in chunks) until enough distinct pairs exist, the
    duplicates of a pair summed into its count w. No Python loop over the non-zeros.
    """
    rng = np.random.default_rng(seed)
    user_cdf = np.cumsum(rng.lognormal(0.0, 1.0, users))
    user_cdf /= user_cdf[-1]
    item_cdf = np.cumsum(1.0 / (np.arange(items, dtype=np.float64) + offset) ** exponent)
    item_cdf /= item_cdf[-1]

    def draw(n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            u = np.searchsorted(user_cdf, rng.random(m), side="right").clip(max=users - 1)
            i = np.searchsorted(item_cdf, rng.random(m), side="right").clip(max=items - 1)
            out[start:start + m] = u * items + i
        return out

    drawn: list[np.ndarray] = []
    n_draws, distinct, rounds, next_draw = 0, 0, 0, int(min_nnz * 1.02)
    while distinct < min_nnz:
        drawn.append(draw(next_draw))
        n_draws += next_draw
        rounds += 1
        keys = np.sort(np.concatenate(drawn)) if len(drawn) > 1 else np.sort(drawn[0])
        drawn = [keys]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        gained, distinct = len(starts) - distinct, len(starts)
        if distinct < min_nnz:  # the next round at this round's rate of new pairs, plus 10%
            next_draw = int((min_nnz - distinct) * 1.1 * next_draw / max(gained, 1)) + 10_000
            del starts
    counts = np.diff(np.append(starts, len(keys))).astype(np.float32)
    uniq = keys[starts]
    del keys, drawn, starts
    rows = (uniq // items).astype(np.int32)
    indices = (uniq % items).astype(np.int32)
    del uniq
    indptr = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=users), out=indptr[1:])
    del rows
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    data = (1.0 + np.float32(ALPHA) * counts).astype(np.float32)
    conf = sp.csr_matrix((data, indices, indptr), shape=(users, items))
    conf.has_sorted_indices = True
    item_nnz = np.bincount(indices, minlength=items)
    user_nnz = np.diff(indptr)
    info = {"users": users, "items": items, "nnz": int(conf.nnz), "draws": n_draws, "rounds": rounds,
            "density": conf.nnz / (users * items), "w_mean": float(counts.mean()), "w_max": float(counts.max()),
            "w_eq_1_share": float((counts == 1).mean()), "user_nnz_min": int(user_nnz.min()),
            "user_nnz_median": float(np.median(user_nnz)), "user_nnz_max": int(user_nnz.max()),
            "empty_users": int((user_nnz == 0).sum()), "empty_items": int((item_nnz == 0).sum()),
            "item_nnz_max": int(item_nnz.max())}
    return conf, info


# --------------------------------------------------------------------------------------------
# the trainers
# --------------------------------------------------------------------------------------------

def per_iteration(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) >= 3 else times)


def run_raw_implicit(conf: sp.csr_matrix, iterations: int) -> tuple[dict, np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares

    times: list[float] = []
    model = AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION, iterations=iterations,
                                    use_cg=True, calculate_training_loss=False, random_state=RANDOM_STATE)
    started = time.perf_counter()
    model.fit(conf, show_progress=False, callback=lambda _i, secs, _loss: times.append(secs))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "per_iteration": times}, model.user_factors, model.item_factors


def run_musicrec(conf: sp.csr_matrix, iterations: int, backend: str) -> tuple[dict, np.ndarray, np.ndarray]:
    from musicrec.als import backends

    result = backends.fit(conf, factors=FACTORS, iterations=iterations, regularization=REGULARIZATION,
                          cg_steps=CG_STEPS, random_state=RANDOM_STATE, backend=backend)
    return ({"seconds": result.seconds, "per_iteration": list(result.seconds_per_iteration),
             "chosen": result.backend, "reason": result.reason}, result.user_factors, result.item_factors)


def gpu_status() -> dict[str, tuple[bool, str]]:
    from musicrec.als import backends

    return {"implicit-gpu": backends.implicit_gpu_available(), "torch-cuda": backends.torch_cuda_available()}


def run_backend(conf: sp.csr_matrix, iterations: int, backend: str) -> dict:
    """One timed fit: its figures, with the final factors under "factors" (or an "error")."""
    reset_peak_rss()
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # implicit's threadpool hints
            if backend == "raw-implicit":
                fig, x, y = run_raw_implicit(conf, iterations)
            else:
                fig, x, y = run_musicrec(conf, iterations, backend)
    except Exception as exc:  # noqa: BLE001 - report the failure and go on with the others
        return {"error": f"{exc.__class__.__name__}: {exc}", "peak_rss_gb": peak_rss_gb()}
    fig["cpu_seconds"] = time.process_time() - cpu  # every thread of this process
    fig["load_before"], fig["load_after"] = load_before, os.getloadavg()[0]
    fig["s_per_iteration"] = per_iteration(fig["per_iteration"])
    fig["peak_rss_gb"] = peak_rss_gb()
    fig["factors"] = (x, y)
    return fig


def bench_scale(name: str, iterations: int, wanted: list[str], gpu: dict[str, tuple[bool, str]], seed: int,
                with_loss: bool, repeat: int) -> dict:
    from musicrec.als import backends

    users, items, min_nnz, exponent, offset = SCALES[name]
    reset_peak_rss()
    started = time.perf_counter()
    conf, info = generate(users, items, min_nnz, exponent, offset, seed)
    info["gen_seconds"] = time.perf_counter() - started
    info["gen_peak_rss_gb"] = peak_rss_gb()
    info["matrix_gb"] = (conf.data.nbytes + conf.indices.nbytes + conf.indptr.nbytes) / 1e9
    print(f"\n=== {name}: {users:,} users x {items:,} items, nnz {info['nnz']:,} "
          f"(density {info['density']:.4%}; {info['draws']:,} draws in {info['rounds']} rounds) ===")
    print(f"generated in {info['gen_seconds']:.1f} s, matrix {info['matrix_gb']:.2f} GB, "
          f"peak RSS while generating {info['gen_peak_rss_gb']:.2f} GB; w mean {info['w_mean']:.2f}, "
          f"max {info['w_max']:.0f}, {info['w_eq_1_share']:.0%} with w = 1; nnz per user "
          f"min/median/max {info['user_nnz_min']:,}/{info['user_nnz_median']:,.0f}/{info['user_nnz_max']:,}; "
          f"empty users {info['empty_users']}, empty items {info['empty_items']:,}")

    # the objective with all factors zero, Σ c_ui / cells: the reference the losses below start from
    info["zero_factor_loss"] = float(conf.data.sum(dtype=np.float64)) / (users * items)
    out: dict = {"matrix": info, "backends": {}, "skipped": {}}
    runnable = []
    for backend in wanted:
        if backend in GPU_BACKENDS and not gpu[backend][0]:
            out["skipped"][backend] = gpu[backend][1]
        else:
            runnable.append(backend)
    runs: dict[str, list[dict]] = {b: [] for b in runnable}
    for rep in range(repeat):  # the backends interleaved, so load from other processes hits them alike
        for backend in runnable:
            if runs[backend] and "error" in runs[backend][-1]:
                continue
            fig = run_backend(conf, iterations, backend)
            runs[backend].append(fig)
            tag = backend + (f" (run {rep + 1}/{repeat})" if repeat > 1 else "")
            if "error" in fig:
                print(f"{tag}: FAILED {fig['error']}")
                continue
            x, y = fig.pop("factors")
            if with_loss and rep == repeat - 1:
                reset_peak_rss()
                t = time.perf_counter()
                fig["loss"] = backends.loss(conf, np.asarray(x), np.asarray(y), REGULARIZATION)
                fig["loss_seconds"] = time.perf_counter() - t
                fig["loss_peak_rss_gb"] = peak_rss_gb()
            del x, y
            its = ", ".join(f"{t:.2f}" for t in fig["per_iteration"])
            print(f"{tag}: {fig['s_per_iteration']:.3f} s/iteration (iterations: {its}; total {fig['seconds']:.1f} s, "
                  f"CPU {fig['cpu_seconds']:.1f} s, load {fig['load_before']:.1f}->{fig['load_after']:.1f})"
                  + (f"; loss {fig['loss']:.8g} in {fig['loss_seconds']:.1f} s, peak RSS "
                     f"{fig['loss_peak_rss_gb']:.2f} GB" if "loss" in fig else ""))
    for backend, done in runs.items():
        if "error" in done[-1]:
            out["backends"][backend] = done[-1]
            continue
        best = dict(min(done, key=lambda f: f["s_per_iteration"]))  # the fastest run's figures
        best["runs_s_per_iteration"] = [f["s_per_iteration"] for f in done]
        best["peak_rss_gb"] = max(f["peak_rss_gb"] for f in done)
        best.update({k: v for k, v in done[-1].items() if k.startswith("loss")})
        out["backends"][backend] = best
    del conf
    print_table(name, out)
    return out


def print_table(name: str, out: dict) -> None:
    figs = {b: f for b, f in out["backends"].items() if "error" not in f}
    raw = figs.get("raw-implicit", {}).get("s_per_iteration")
    print(f"\n{name}: {'backend':14s} {'s/iteration':>12s} {'vs raw':>8s} {'total s':>9s} {'CPU s/it':>9s} "
          f"{'peak RSS GB':>12s} {'loss/cell':>12s}")
    for backend, f in out["backends"].items():
        if "error" in f:
            print(f"{name}: {backend:14s} {'FAILED':>12s}  {f['error']}")
            continue
        ratio = f"{f['s_per_iteration'] / raw:8.2f}" if raw else f"{'-':>8s}"
        loss = f"{f['loss']:12.8g}" if "loss" in f else f"{'-':>12s}"
        print(f"{name}: {backend:14s} {f['s_per_iteration']:12.3f} {ratio} {f['seconds']:9.1f} "
              f"{f['cpu_seconds'] / len(f['per_iteration']):9.2f} {f['peak_rss_gb']:12.2f} {loss}")
    print(f"{name}: (s/iteration: median wall time per iteration, the first excluded from >= 3, fastest of "
          f"the runs; CPU s/it: process CPU seconds of the whole fit / iterations, setup included)")
    if any("loss" in f for f in figs.values()):
        print(f"{name}: (loss/cell is the objective over users x items cells, regularization included; "
              f"all-zero factors give {out['matrix']['zero_factor_loss']:.8g})")
    ratios: dict = {}
    if raw and "implicit-cpu" in figs:
        r = ratios["implicit-cpu/raw-implicit"] = figs["implicit-cpu"]["s_per_iteration"] / raw
        print(f"musicrec train step / raw implicit = {r:.2f} (target <= {TARGET_RATIO}) "
              f"{'met' if r <= TARGET_RATIO else 'MISSED'}")
        c = ratios["implicit-cpu/raw-implicit CPU seconds"] = (figs["implicit-cpu"]["cpu_seconds"]
                                                               / figs["raw-implicit"]["cpu_seconds"])
        print(f"musicrec train step / raw implicit by CPU seconds of the fit = {c:.2f}")
    if raw and "torch-cpu" in figs:
        r = ratios["torch-cpu/raw-implicit"] = figs["torch-cpu"]["s_per_iteration"] / raw
        print(f"torch CPU / raw implicit = {r:.2f}")
    for gpu_backend, cpu_backend in GPU_OF.items():
        if gpu_backend in figs and cpu_backend in figs:
            s = ratios[f"{gpu_backend} speed-up"] = (figs[cpu_backend]["s_per_iteration"]
                                                     / figs[gpu_backend]["s_per_iteration"])
            print(f"GPU speed-up {gpu_backend} vs {cpu_backend}: {s:.1f}x")
    for backend, why in out["skipped"].items():
        print(f"{backend}: GPU figures skipped: {why}")
    out["ratios"] = ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=[*SCALES, "all"], default="all")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--backends", nargs="+", choices=CPU_BACKENDS + GPU_BACKENDS,
                        default=CPU_BACKENDS + GPU_BACKENDS,
                        help="default: all (the GPU ones are skipped, with the reason, where unavailable)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the backends N times, interleaved, and keep each one's fastest run")
    parser.add_argument("--no-loss", action="store_true", help="skip the objective of the final factors")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "als.json")
    args = parser.parse_args()

    import threadpoolctl
    import torch

    scales = list(SCALES) if args.scale == "all" else [args.scale]
    gpu = gpu_status()
    blas = sorted({f"{p['internal_api']}:{p['num_threads']}" for p in threadpoolctl.threadpool_info()})
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"BLAS {', '.join(blas)}; factors={FACTORS}, regularization={REGULARIZATION}, cg_steps={CG_STEPS}, "
          f"iterations={args.iterations}")
    for backend, (ok, why) in gpu.items():
        print(f"{backend}: {'available' if ok else 'not available'} ({why})")
    if not any(ok for ok, _ in gpu.values()):
        print("GPU figures skipped: no GPU backend available on this machine")

    results = {"at": datetime.now(UTC).isoformat(), "cores": os.cpu_count(), "iterations": args.iterations,
               "factors": FACTORS, "regularization": REGULARIZATION, "cg_steps": CG_STEPS,
               "gpu": {b: {"available": ok, "why": why} for b, (ok, why) in gpu.items()}, "scales": {}}
    for name in scales:
        results["scales"][name] = bench_scale(name, args.iterations, args.backends, gpu, args.seed,
                                              with_loss=not args.no_loss, repeat=args.repeat)
    results["peak_rss_gb"] = max_rss_gb()
    phases = [f.get("peak_rss_gb", 0.0) for s in results["scales"].values() for f in s["backends"].values()]
    phases += [f.get("loss_peak_rss_gb", 0.0) for s in results["scales"].values() for f in s["backends"].values()]
    phases += [s["matrix"]["gen_peak_rss_gb"] for s in results["scales"].values()]
    print(f"\npeak RSS: {results['peak_rss_gb']:.2f} GB (ru_maxrss); highest phase {max(phases):.2f} GB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()

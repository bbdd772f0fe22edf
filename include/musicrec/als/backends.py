"""Implicit-feedback ALS trainers behind one interface (Hu, Koren & Volinsky 2008; CG as in implicit).

* ``implicit-cpu`` / ``implicit-gpu``: the ``implicit`` package (its GPU module needs CUDA 13 and
  ``rmm-cu13``; ``implicit.gpu.HAS_CUDA`` tells whether it loaded);
* ``torch``: the same conjugate-gradient solver written with torch sparse CSR ops
  (``sampled_addmm`` + CSR×dense matmul), on CUDA when available, else on CPU — for GPU hosts where
  implicit's CUDA build does not load;
* ``auto``: implicit's GPU model when it loaded, else torch on CUDA when a GPU is visible, else
  implicit on CPU. The choice and the reason are returned and logged.

Objective (both backends): Σ_ui c_ui (p_ui − x_u·y_i)² + λ(‖X‖² + ‖Y‖²), p_ui = 1 where the
confidence matrix C has an entry (c_ui = that entry), c_ui = 1 and p_ui = 0 elsewhere.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

Callback = Callable[[int, float], None]  # (iteration, seconds)


class TrainingError(RuntimeError):
    pass


@dataclass
class FitResult:
    user_factors: np.ndarray
    item_factors: np.ndarray
    backend: str  # implicit-cpu | implicit-gpu | torch-cpu | torch-cuda
    reason: str
    seconds: float
    seconds_per_iteration: list[float] = field(default_factory=list)

    def check_finite(self) -> None:
        for name, arr in (("user", self.user_factors), ("item", self.item_factors)):
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            if bad:
                raise TrainingError(f"{bad} {name} factor rows are NaN/inf after training with {self.backend}: "
                                    "lower alpha or raise regularization")


def implicit_gpu_available() -> tuple[bool, str]:
    try:
        import implicit.gpu

        if implicit.gpu.HAS_CUDA:
            return True, "implicit.gpu.HAS_CUDA is true"
        return False, "implicit's CUDA module did not load (implicit.gpu.HAS_CUDA is false)"
    except Exception as exc:  # an import error is a "no" with its reason
        return False, f"implicit.gpu failed to import: {exc}"


def torch_cuda_available() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, f"torch sees CUDA device {torch.cuda.get_device_name(0)}"
        return False, "torch.cuda.is_available() is false"
    except Exception as exc:
        return False, f"torch failed to import: {exc}"


def choose(backend: str) -> tuple[str, str]:
    """Resolve ``backend`` to a concrete one: (backend, why)."""
    if backend in ("implicit-cpu", "torch-cpu"):
        return backend, "asked for"
    if backend == "implicit-gpu":
        ok, why = implicit_gpu_available()
        if not ok:
            raise TrainingError(f"backend implicit-gpu asked for, but {why}")
        return backend, why
    if backend == "torch-cuda":
        ok, why = torch_cuda_available()
        if not ok:
            raise TrainingError(f"backend torch-cuda asked for, but {why}")
        return backend, why
    if backend == "torch":
        ok, why = torch_cuda_available()
        return ("torch-cuda", why) if ok else ("torch-cpu", f"no GPU for torch ({why})")
    if backend == "implicit":
        ok, why = implicit_gpu_available()
        return ("implicit-gpu", why) if ok else ("implicit-cpu", why)
    if backend == "auto":
        ok, why = implicit_gpu_available()
        if ok:
            return "implicit-gpu", why
        tok, twhy = torch_cuda_available()
        if tok:
            return "torch-cuda", f"{why}; {twhy}: the torch CG solver runs on the GPU"
        return "implicit-cpu", f"no GPU: {why}; {twhy}"
    raise TrainingError(f"unknown backend {backend!r}")


def init_factors(n: int, factors: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.random((n, factors), dtype=np.float32) * 0.01).astype(np.float32)


def fit(conf: sp.csr_matrix, *, factors: int, iterations: int, regularization: float, cg_steps: int = 3,
        random_state: int = 42, backend: str = "auto", init: tuple[np.ndarray, np.ndarray] | None = None,
        callback: Callback | None = None, num_threads: int = 0) -> FitResult:
    """Train on the confidence matrix ``conf`` (users × items, float32, 1 + alpha·w entries)."""
    conf = sp.csr_matrix(conf, dtype=np.float32)
    if conf.nnz == 0:
        raise TrainingError("the confidence matrix is empty")
    chosen, why = choose(backend)
    log.info("ALS backend %s (asked %s): %s", chosen, backend, why)
    if init is None:
        rng = np.random.default_rng(random_state)
        init = (init_factors(conf.shape[0], factors, rng), init_factors(conf.shape[1], factors, rng))
    times: list[float] = []

    def on_iteration(i: int, seconds: float) -> None:
        times.append(seconds)
        if callback:
            callback(i, seconds)

    started = time.perf_counter()
    if chosen.startswith("implicit"):
        x, y = _fit_implicit(conf, factors, iterations, regularization, cg_steps, random_state, init,
                             gpu=chosen == "implicit-gpu", callback=on_iteration, num_threads=num_threads)
    else:
        x, y = fit_torch(conf, factors=factors, iterations=iterations, regularization=regularization,
                         cg_steps=cg_steps, init=init, device="cuda" if chosen == "torch-cuda" else "cpu",
                         callback=on_iteration)
    result = FitResult(x, y, chosen, why, time.perf_counter() - started, times)
    result.check_finite()
    return result


def _fit_implicit(conf: sp.csr_matrix, factors: int, iterations: int, regularization: float, cg_steps: int,
                  random_state: int, init: tuple[np.ndarray, np.ndarray], *, gpu: bool, callback: Callback,
                  num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    # implicit runs its own threads; a multi-threaded BLAS inside each of them oversubscribes the cores
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # implicit's threadpool/BLAS hints
        if gpu:
            import implicit.gpu
            from implicit.gpu.als import AlternatingLeastSquares as GpuALS

            model = GpuALS(factors=factors, regularization=regularization, iterations=iterations,
                           random_state=random_state, calculate_training_loss=False)
            model.cg_steps = cg_steps
            model.user_factors = implicit.gpu.Matrix(np.ascontiguousarray(init[0]))
            model.item_factors = implicit.gpu.Matrix(np.ascontiguousarray(init[1]))
        else:
            from implicit.cpu.als import AlternatingLeastSquares as CpuALS

            model = CpuALS(factors=factors, regularization=regularization, iterations=iterations,
                           random_state=random_state, use_cg=True, num_threads=num_threads,
                           calculate_training_loss=False)
            model.cg_steps = cg_steps
            model.user_factors = init[0].copy()
            model.item_factors = init[1].copy()
        model.fit(conf, show_progress=False, callback=lambda i, secs, _loss: callback(i, secs))
        if gpu:
            model = model.to_cpu()
    x = np.ascontiguousarray(model.user_factors[:, :factors], dtype=np.float32)
    y = np.ascontiguousarray(model.item_factors[:, :factors], dtype=np.float32)
    return x, y


def fit_torch(conf: sp.csr_matrix, *, factors: int, iterations: int, regularization: float, cg_steps: int = 3,
              init: tuple[np.ndarray, np.ndarray], device: str = "cpu", callback: Callback | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS with batched conjugate gradient, every user (item) solved at once.

    For the user side, A_u = YᵀY + λI + Σ_i (c_ui − 1) y_i y_iᵀ and b_u = Σ_i c_ui y_i; A·P for all
    users is ``P @ (YᵀY + λI) + W @ Y`` where W is C's pattern with values (c_ui − 1)(p_u·y_i), the
    latter from ``torch.sparse.sampled_addmm``. cg_steps CG steps from the previous factors (warm start).
    """
    import torch

    dev = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        cui = _torch_csr(conf, dev)
        ciu = _torch_csr(conf.T.tocsr(), dev)
        x = torch.from_numpy(np.ascontiguousarray(init[0], dtype=np.float32)).to(dev)
        y = torch.from_numpy(np.ascontiguousarray(init[1], dtype=np.float32)).to(dev)
        for it in range(iterations):
            started = time.perf_counter()
            _cg_solve(cui, x, y, regularization, cg_steps)
            _cg_solve(ciu, y, x, regularization, cg_steps)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if callback:
                callback(it, time.perf_counter() - started)
        return x.cpu().numpy(), y.cpu().numpy()


def _torch_csr(m: sp.csr_matrix, dev):
    import torch

    m = m.copy()
    m.sort_indices()
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=dev)


def _cg_solve(c, x, y, regularization: float, cg_steps: int) -> None:
    """Update ``x`` in place: cg_steps of CG on every row's normal equations."""
    import torch

    f = y.shape[1]
    yty = y.T @ y + regularization * torch.eye(f, device=y.device, dtype=y.dtype)
    crow, col, conf = c.crow_indices(), c.col_indices(), c.values()
    cm1 = conf - 1.0

    def matvec(p):
        s = torch.sparse.sampled_addmm(c, p, y.T, beta=0.0, alpha=1.0).values()
        w = torch.sparse_csr_tensor(crow, col, s * cm1, size=c.shape)
        return p @ yty + w @ y

    b = c @ y  # Σ_i c_ui y_i (p_ui = 1 on the pattern)
    r = b - matvec(x)
    p = r.clone()
    rs = (r * r).sum(1)
    active = rs > 1e-20
    for _ in range(cg_steps):
        ap = matvec(p)
        denom = (p * ap).sum(1)
        alpha = torch.where(active & (denom > 0), rs / torch.where(denom > 0, denom, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        active = active & (rs_new > 1e-20)
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        p = r + beta[:, None] * p
        rs = rs_new


def loss(conf: sp.csr_matrix, x: np.ndarray, y: np.ndarray, regularization: float, chunk_nnz: int = 1 << 20
         ) -> float:
    """The objective above, divided by the number of cells (users × items) so sizes compare."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    total = float(np.sum((x64.T @ x64) * (y64.T @ y64)))  # Σ over all cells of (x_u·y_i)²
    conf = sp.csr_matrix(conf)
    rows = np.repeat(np.arange(conf.shape[0], dtype=np.int64), np.diff(conf.indptr))
    for start in range(0, conf.nnz, chunk_nnz):
        sl = slice(start, start + chunk_nnz)
        s = np.einsum("ij,ij->i", x64[rows[sl]], y64[conf.indices[sl]])
        c = conf.data[sl].astype(np.float64)
        total += float(np.sum(c * (1 - s) ** 2 - s ** 2))
    total += regularization * float(np.sum(x64 ** 2) + np.sum(y64 ** 2))
    return total / (conf.shape[0] * conf.shape[1])

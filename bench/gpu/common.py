"""Shared bits of the GPU bench (issue 19): where it ran, and JSON written as it goes.

Imports only what the device machine has (stdlib here; torch lazily): see machine_packages.txt.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> str | None:
    """``name, driver, memory`` of each GPU as nvidia-smi prints them, or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine(smoke: bool) -> dict[str, Any]:
    """What every figure is tagged with: the machine, the library versions, and the mode."""
    info: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "cpu-smoke (tiny sizes, CPU only: code-path check, not a measurement)" if smoke else "gpu",
        "host": platform.node(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(), "nvidia_smi": nvidia_smi(),
        "versions": {d: version_of(d) for d in ("torch", "implicit", "rmm-cu13", "transformers", "tokenizers",
                                                "flagembedding", "numpy", "scipy")},
    }
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            props = torch.cuda.get_device_properties(0)
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    except Exception as exc:  # noqa: BLE001 - recorded, the sections say what they could not run
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    return info


def machine_line(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or (m.get("nvidia_smi") or "no GPU")
    v = m.get("versions", {})
    return (f"{gpu}; {m.get('cpu_count')} CPUs; Python {m.get('python')}; torch {v.get('torch')} "
            f"(CUDA {m.get('torch_cuda')}); implicit {v.get('implicit')}; transformers {v.get('transformers')}; "
            f"FlagEmbedding {v.get('flagembedding')}; {m.get('mode')}")


class Results:
    """A section's JSON, rewritten after each figure so a timeout or crash keeps what was measured."""

    def __init__(self, path: Path, section: str, smoke: bool) -> None:
        self.path = path
        self.data: dict[str, Any] = {"section": section, "machine": machine(smoke), "smoke": smoke,
                                     "status": "running"}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)

    def finish(self, status: str = "done") -> None:
        self.data["status"] = status
        self.save()


def log(msg: str) -> None:
    print(msg, flush=True)
    sys.stdout.flush()

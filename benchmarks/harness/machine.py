"""The machine a run measures: a short name for the results files, and the facts the table's header quotes."""
from __future__ import annotations

import os
import platform
import re
from typing import Any, Dict

import torch


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: Any = "cpu") -> str:
    """Short machine label used for the results file name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "cuda-" + _slug(torch.cuda.get_device_name(dev))
    return f"cpu-{os.cpu_count()}core-{_slug(cpu_model())}"


def machine_info(device: Any = "cpu") -> Dict[str, Any]:
    dev = torch.device(device)
    info: Dict[str, Any] = {
        "name": machine_name(device),
        "device": str(dev),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(gpu=p.name, gpu_memory_bytes=p.total_memory, cuda=torch.version.cuda,
                    capability=f"{p.major}.{p.minor}")
    return info


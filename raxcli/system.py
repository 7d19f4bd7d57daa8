"""How much of this machine rax may use (RAM and CPUs, cgroup limits included) and the
generation limits that follow from it.

The RAM tier decides how long a model may think and answer and how long a conversation
may grow: a small machine is also a slow one, and a thought of 2,000 tokens there takes
minutes. Explicit larger requests are clamped to the tier's caps with a warning.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a huge page-rounded number rather than "max"
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Machine:
    total_ram: int            # bytes: physical RAM, or the cgroup limit when lower
    available_ram: int        # bytes free for new allocations (cgroup headroom included)
    cpus: int                 # CPUs this process may run on (affinity and cgroup quota)
    physical_cores: int | None
    ram_overridden: bool = False   # --ram-gb replaced the detected figure

    @property
    def total_gb(self) -> float:
        return self.total_ram / GIB

    @property
    def available_gb(self) -> float:
        return self.available_ram / GIB

    def default_threads(self) -> int:
        """One compute thread per physical core we may use (hyperthreads do not help GEMV)."""
        return max(1, min(self.physical_cores or self.cpus, self.cpus))


@dataclass(frozen=True)
class Limits:
    tier: str
    think_budget: int      # default thinking budget, tokens
    max_tokens: int        # default answer length (thinking included), tokens
    context: int           # default and largest context window, tokens
    think_cap: int         # largest --think-budget honoured
    max_tokens_cap: int    # largest --max-tokens honoured

    def describe(self) -> str:
        return (f"think {self.think_budget} · answer {self.max_tokens} · context {self.context} tokens "
                f"(caps {self.think_cap} / {self.max_tokens_cap})")


# (upper bound in GiB, limits). The think and answer figures follow QORA-4B's table; the
# context grows with RAM, as a 2B model's KV cache costs ~25 KB per token.
TIERS = (
    (4, Limits("< 4 GB", 128, 256, 4096, 256, 512)),
    (8, Limits("4–8 GB", 256, 512, 8192, 1024, 1024)),
    (12, Limits("8–12 GB", 1024, 1024, 16384, 2048, 2048)),
    (math.inf, Limits("≥ 12 GB", 2048, 2048, 32768, 8192, 8192)),
)


def limits_for(machine: Machine) -> Limits:
    """The tier of the machine's total RAM (not what happens to be free now: the answer
    should not change from one start to the next because a browser is open)."""
    gb = machine.total_gb
    return next(limits for bound, limits in TIERS if gb < bound)


@dataclass(frozen=True)
class Fitted:
    """A limit after clamping; `warning` says what was asked and what was given."""
    value: int
    warning: str | None = None


def fit(requested: int | None, default: int, cap: int, what: str, flag: str) -> Fitted:
    if requested is None:
        return Fitted(default)
    if requested > cap:
        return Fitted(cap, f"{flag} {requested} is more than this machine's cap for {what}; using {cap}")
    return Fitted(requested)


# -- detection --------------------------------------------------------------
def detect(ram_gb: float | None = None, cgroup_root: Path = CGROUP_ROOT) -> Machine:
    """What psutil sees, narrowed by cgroup limits; `ram_gb` (--ram-gb) replaces the RAM total."""
    import psutil
    vm = psutil.virtual_memory()
    total, available = vm.total, vm.available
    cgroup = _cgroup_dir(cgroup_root)
    limit = memory_limit(cgroup, cgroup_root)
    if limit is not None and limit < total:
        total = limit
        used = memory_usage(cgroup)
        if used is not None:
            available = min(available, max(0, limit - used))
    overridden = ram_gb is not None
    if overridden:
        total = int(ram_gb * GIB)
        available = min(available, total)
    try:
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil cannot tell on some virtual machines
        physical = None
    return Machine(total, available, usable_cpus(cgroup, cgroup_root), physical, overridden)


def usable_cpus(cgroup: Path | None = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs in our affinity mask, no more than the cgroup CPU quota (rounded up)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroup if cgroup is not None else _cgroup_dir(cgroup_root), cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_dir(root: Path, proc_cgroup: Path = Path("/proc/self/cgroup")) -> Path | None:
    """This process's cgroup v2 folder (the line "0::/path"), or None on cgroup v1."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            folder = root / line[3:].lstrip("/")
            return folder if folder.is_dir() else root
    return None


def _ancestors(cgroup: Path, root: Path):
    """cgroup and every folder above it up to the root: a parent's limit binds us too."""
    folder = cgroup
    while True:
        yield folder
        if folder == root or root not in folder.parents:
            return
        folder = folder.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def memory_limit(cgroup: Path | None, root: Path = CGROUP_ROOT) -> int | None:
    """Smallest memory limit over the cgroup and its parents, in bytes; None when unlimited."""
    limits = []
    if cgroup is not None:
        for folder in _ancestors(cgroup, root):
            value = _read(folder / "memory.max")
            if value and value != "max" and value.isdigit():
                limits.append(int(value))
    else:   # cgroup v1
        value = _read(root / "memory" / "memory.limit_in_bytes")
        if value and value.isdigit() and int(value) < _V1_UNLIMITED:
            limits.append(int(value))
    return min(limits) if limits else None


def memory_usage(cgroup: Path | None, root: Path = CGROUP_ROOT) -> int | None:
    path = cgroup / "memory.current" if cgroup is not None else root / "memory" / "memory.usage_in_bytes"
    value = _read(path)
    return int(value) if value and value.isdigit() else None


def cpu_quota(cgroup: Path | None, root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup may use (quota / period), the smallest over its parents."""
    quotas = []
    if cgroup is not None:
        for folder in _ancestors(cgroup, root):
            parts = (_read(folder / "cpu.max") or "").split()
            if len(parts) == 2 and parts[0] != "max" and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]):
                quotas.append(int(parts[0]) / int(parts[1]))
    else:
        quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
        if quota and period and quota.lstrip("-").isdigit() and period.isdigit() and int(quota) > 0 and int(period):
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def describe_machine(machine: Machine, threads: int | None = None) -> str:
    ram = f"{machine.total_gb:.1f} GB RAM"
    ram += " (--ram-gb)" if machine.ram_overridden else f" ({machine.available_gb:.1f} GB free)"
    cpus = f"{machine.cpus} CPU" + ("s" if machine.cpus != 1 else "")
    used = f", {threads} thread" + ("s" if threads != 1 else "") if threads else ""
    return f"{ram}, {cpus}{used}"

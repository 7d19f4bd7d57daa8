"""Machine detection (cgroup limits respected) and the limits table fitted to RAM."""
from pathlib import Path

import pytest

from raxcli import system
from raxcli.system import GIB, Machine


def machine(gb: float) -> Machine:
    return Machine(total_ram=int(gb * GIB), available_ram=int(gb * GIB), cpus=2, physical_cores=2)


@pytest.mark.parametrize("gb, think, answer, caps", [
    (1.5, 128, 256, (256, 512)),       # a small board
    (3.99, 128, 256, (256, 512)),      # just under the first boundary
    (4.0, 256, 512, (1024, 1024)),     # boundaries belong to the tier above
    (7.9, 256, 512, (1024, 1024)),
    (8.0, 1024, 1024, (2048, 2048)),
    (11.9, 1024, 1024, (2048, 2048)),
    (12.0, 2048, 2048, (8192, 8192)),
    (256.0, 2048, 2048, (8192, 8192)),
])
def test_ram_tier_gives_the_table_defaults_and_caps(gb, think, answer, caps):
    limits = system.limits_for(machine(gb))
    assert (limits.think_budget, limits.max_tokens) == (think, answer)
    assert (limits.think_cap, limits.max_tokens_cap) == caps
    assert limits.context >= limits.max_tokens_cap


def test_context_grows_with_the_tier():
    contexts = [system.limits_for(machine(gb)).context for gb in (2, 6, 10, 16)]
    assert contexts == sorted(contexts) and len(set(contexts)) == 4


def test_fit_keeps_defaults_and_smaller_values_and_clamps_larger_ones_with_a_warning():
    assert system.fit(None, 256, 512, "answers", "--max-tokens") == system.Fitted(256)
    assert system.fit(100, 256, 512, "answers", "--max-tokens") == system.Fitted(100)
    assert system.fit(512, 256, 512, "answers", "--max-tokens") == system.Fitted(512)
    clamped = system.fit(5000, 256, 512, "answers", "--max-tokens")
    assert clamped.value == 512
    assert "--max-tokens 5000" in clamped.warning and "512" in clamped.warning


def test_ram_override_replaces_the_detected_total():
    m = system.detect(ram_gb=3)
    assert m.ram_overridden and m.total_ram == 3 * GIB
    assert m.available_ram <= m.total_ram
    assert system.limits_for(m).tier == "< 4 GB"
    assert "--ram-gb" in system.describe_machine(m, 2)


def test_detection_sees_this_machine():
    m = system.detect()
    assert m.total_ram > 0 and 0 <= m.available_ram <= m.total_ram
    assert m.cpus >= 1 and 1 <= m.default_threads() <= m.cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_memory_limit_is_the_smallest_over_the_parents(tmp_path):
    root = tmp_path / "cgroup"
    leaf = root / "user.slice" / "rax.scope"
    write(root / "user.slice" / "memory.max", str(6 * GIB))
    write(leaf / "memory.max", "max")                  # unlimited here, but the parent binds
    write(leaf / "memory.current", str(GIB))
    write(root / "memory.max", str(64 * GIB))
    assert system.memory_limit(leaf, root) == 6 * GIB
    assert system.memory_usage(leaf, root) == GIB


def test_cgroup_v2_cpu_quota_is_quota_over_period(tmp_path):
    root = tmp_path / "cgroup"
    leaf = root / "job"
    write(leaf / "cpu.max", "150000 100000")
    write(root / "cpu.max", "max 100000")
    assert system.cpu_quota(leaf, root) == pytest.approx(1.5)
    assert system.usable_cpus(leaf, root) <= 2          # 1.5 CPUs' worth rounds up to 2


def test_cgroup_v1_treats_the_huge_number_as_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", str(9223372036854771712))
    assert system.memory_limit(None, root) is None
    write(root / "memory" / "memory.limit_in_bytes", str(2 * GIB))
    assert system.memory_limit(None, root) == 2 * GIB
    write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    write(root / "cpu" / "cpu.cfs_period_us", "100000")
    assert system.cpu_quota(None, root) is None
    write(root / "cpu" / "cpu.cfs_quota_us", "300000")
    assert system.cpu_quota(None, root) == pytest.approx(3.0)


def test_own_cgroup_is_read_from_proc_self_cgroup(tmp_path):
    root = tmp_path / "cgroup"
    (root / "system.slice" / "job.service").mkdir(parents=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/system.slice/job.service\n")
    assert system._cgroup_dir(root, proc) == root / "system.slice" / "job.service"
    proc.write_text("12:memory:/docker/abc\n11:cpu:/docker/abc\n")     # cgroup v1 only
    assert system._cgroup_dir(root, proc) is None

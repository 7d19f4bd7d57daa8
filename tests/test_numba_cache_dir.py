"""The Numba cache lives in a folder per version of the kernel sources (quant/__init__.py)."""
import os
import time

import quant


def test_any_change_to_a_source_file_names_a_new_cache_folder(tmp_path):
    (tmp_path / "quant").mkdir()
    (tmp_path / "raxcli" / "engine").mkdir(parents=True)
    helper = tmp_path / "quant" / "helpers.py"
    helper.write_text("def f(): return 1\n")
    (tmp_path / "raxcli" / "engine" / "ops.py").write_text("x = 1\n")
    first = quant._sources_fingerprint(tmp_path)
    assert quant._sources_fingerprint(tmp_path) == first
    helper.write_text("def f(): return 2\n")                 # same size, new time stamp
    os.utime(helper, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert quant._sources_fingerprint(tmp_path) != first


def test_the_cache_folder_is_under_the_user_cache_and_old_folders_go(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = tmp_path / "rax" / "numba"
    stale, recent = base / "0123456789abcdef", base / "fedcba9876543210"
    stale.mkdir(parents=True)
    recent.mkdir()
    week_and_a_day = time.time() - 8 * 24 * 3600
    os.utime(stale, (week_and_a_day, week_and_a_day))
    folder = quant._numba_cache_dir()
    assert folder == str(base / quant._sources_fingerprint())
    assert os.path.isdir(folder) and recent.is_dir() and not stale.exists()


def test_this_process_compiles_into_that_folder_unless_told_otherwise():
    import numba
    assert os.environ["NUMBA_CACHE_DIR"] == numba.config.CACHE_DIR


def test_kernels_cache_into_that_folder_when_numba_was_imported_first(tmp_path):
    """A script that imports numba before rax: the kernels must still cache per source version
    (Numba's default, __pycache__ keyed on each file's own time stamp, kept stale kernels)."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import numba, quant, os; from quant import gemv; "
            "print(os.environ['NUMBA_CACHE_DIR']); print(gemv.gemv_q4_k._cache._cache_path)")
    folder, cache_path = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True, timeout=120).stdout.split()
    assert folder.startswith(str(tmp_path / "rax" / "numba"))
    assert cache_path.startswith(folder)

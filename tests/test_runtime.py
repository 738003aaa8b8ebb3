import random

import pytest
import torch

from toolkit import runtime


def test_folders_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    monkeypatch.setenv(runtime.RESULTS_ENV, str(tmp_path / "r"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert runtime.results_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()


def test_relative_folders_are_anchored_at_the_repository_root(monkeypatch):
    root = runtime.repo_root()
    monkeypatch.chdir(root / "notebooks")  # where the chapters run
    monkeypatch.setenv(runtime.CACHE_ENV, "build/pytest-tmp/relative-cache")
    monkeypatch.setenv(runtime.RESULTS_ENV, "build/pytest-tmp/relative-results")
    assert runtime.cache_dir() == root / "build" / "pytest-tmp" / "relative-cache"
    assert runtime.results_dir() == root / "build" / "pytest-tmp" / "relative-results"
    assert not (root / "notebooks" / "build").exists()


def test_results_default_to_the_repository_build_folder(monkeypatch):
    monkeypatch.delenv(runtime.RESULTS_ENV)
    root = runtime.repo_root()
    assert (root / "pyproject.toml").is_file()
    assert runtime.results_dir() == root / "build" / "results"


def test_smoke_mode_reads_the_variable(monkeypatch):
    monkeypatch.setenv(runtime.SMOKE_ENV, "1")
    assert runtime.smoke_mode()
    monkeypatch.setenv(runtime.SMOKE_ENV, "0")
    assert not runtime.smoke_mode()


def test_seeding_repeats_random_numbers():
    runtime.seed_everything(7)
    first = (random.random(), torch.rand(3))
    runtime.seed_everything(7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_setup_reports_device_threads_and_folders(capsys):
    runtime.setup(seed=1)
    out = capsys.readouterr().out
    assert f"threads={torch.get_num_threads()}" in out and "cache:" in out and "results:" in out
    assert runtime.device().type in ("cpu", "cuda")


def test_release_memory_hands_freed_tensors_back_to_the_operating_system():
    """Freed 2 MB tensors stay in glibc's heap (the resident size does not fall) until release_memory trims it."""
    import subprocess
    import sys

    script = """
import torch, toolkit.runtime as r
rss = lambda: int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) // 1024
big = torch.empty(16 * 2**20 // 4); del big                     # freeing a large block raises glibc's mmap threshold
kept = [torch.ones(2**19) for _ in range(400)]                    # 400 x 2 MB, now from the heap
del kept[:-1]                                                    # all but the last: a hole glibc cannot shrink by itself
before = rss(); r.release_memory(); after = rss()
print(before, after)
"""
    if runtime._malloc_trim() is None:
        pytest.skip("the C library has no malloc_trim (not glibc): release_memory only collects garbage here")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    before, after = map(int, out)
    assert before - after > 500, f"resident MB before {before}, after {after}"


def test_setup_registers_the_memory_release_once_per_ipython_session():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        runtime.setup(verbose=False)
        runtime.setup(verbose=False)  # a chapter re-run in the same kernel: still one hook
        hooks = [c for c in shell.events.callbacks["post_run_cell"] if c.__name__ == "_workbook_release_memory"]
        assert len(hooks) == 1
        shell.run_cell("x = 1")  # the hook runs without error after a cell
    finally:
        for c in [c for c in shell.events.callbacks["post_run_cell"] if c.__name__ == "_workbook_release_memory"]:
            shell.events.unregister("post_run_cell", c)
        InteractiveShell.clear_instance()

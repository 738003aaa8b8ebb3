import random

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

import random

import torch

from toolkit import runtime


def test_folders_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    monkeypatch.setenv(runtime.RESULTS_ENV, str(tmp_path / "r"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert runtime.results_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()


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

"""`make lab`'s settings and command line (the browser test checks what they give a student)."""

import json

import pytest

from toolkit.workbook import lab


def test_overrides_turn_off_news_and_update_checks_and_keep_other_settings(tmp_path):
    path = lab.overrides_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                "@jupyterlab/apputils-extension:notification": {"doNotDisturbMode": True}}))
    assert lab.install_overrides(tmp_path) == path
    settings = json.loads(path.read_text())
    assert settings["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert settings["@jupyterlab/apputils-extension:notification"] == {"doNotDisturbMode": True, "fetchNews": "false", "checkForUpdates": False}
    lab.install_overrides(tmp_path)  # idempotent
    assert json.loads(path.read_text()) == settings
    assert not list(path.parent.glob(".*tmp*")), "written atomically, nothing left behind"


def test_a_broken_overrides_file_is_named(tmp_path):
    path = lab.overrides_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="overrides.json"):
        lab.install_overrides(tmp_path)


def test_the_command_serves_the_chapters_and_refuses_a_missing_folder(tmp_path):
    args = lab.command(port=8899, token="abc", open_browser=False)
    assert args[1:4] == ["-m", "jupyter", "lab"] and f"--ServerApp.root_dir={lab.NOTEBOOKS}" in args
    assert "--ServerApp.port=8899" in args and "--IdentityProvider.token=abc" in args and "--no-browser" in args
    assert "--no-browser" not in lab.command()
    assert f"--LabApp.app_settings_dir={tmp_path}" in lab.command(app_settings_dir=tmp_path)
    assert lab.write_overrides(tmp_path / "settings") == tmp_path / "settings" / "overrides.json"
    with pytest.raises(FileNotFoundError, match="root"):
        lab.command(tmp_path / "nothing")


def test_every_chapter_names_the_kernel_make_install_registers():
    import nbformat

    for path in sorted(lab.NOTEBOOKS.glob("*.ipynb")):
        assert nbformat.read(path, as_version=4).metadata["kernelspec"]["name"] == lab.KERNEL, path.name


def test_idle_kernels_are_culled_after_a_setting_that_jupyter_server_knows():
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    args = lab.command()
    assert f"--MappingKernelManager.cull_idle_timeout={60 * lab.CULL_IDLE_MINUTES}" in args and lab.CULL_IDLE_MINUTES == 30
    assert "--MappingKernelManager.cull_interval=60" in args
    assert {"cull_idle_timeout", "cull_interval"} <= set(MappingKernelManager.class_trait_names()), "flags the server reads"
    assert "--MappingKernelManager.cull_idle_timeout=300" in lab.command(cull_idle_minutes=5)
    assert not any("cull" in a for a in lab.command(cull_idle_minutes=0)), "0 turns culling off"
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="cull_idle_minutes must be a whole number of minutes"):
            lab.command(cull_idle_minutes=bad)

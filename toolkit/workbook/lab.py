"""`make lab`: JupyterLab on the chapters, with the workbook's kernel and nothing in the way.

    python -m toolkit.workbook.lab                # what `make lab` runs: opens notebooks/ in your browser
    python -m toolkit.workbook.lab --no-browser   # on a remote machine: prints the URL (with its token)
    python -m toolkit.workbook.lab --cull-idle-minutes 0   # keep idle kernels (default: shut down after 30 minutes)

Every chapter's metadata names the kernel ``python3``; ``make install`` registers the
workbook's virtual environment under that name ("Python 3 (workbook)"), so JupyterLab starts
it without asking. JupyterLab 4 also asks, on its first start, whether it may fetch news from
the internet and checks for updates; neither is possible or useful offline, so
``install_overrides`` turns both off in the environment's ``overrides.json`` (the file
JupyterLab reads for site-wide setting defaults). A reader can still change them in
Settings; nothing else is touched.

The browser test (``tests/workbook/test_browser.py``) starts JupyterLab through ``command`` too, so it
checks what ``make lab`` gives a student.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from toolkit import artifacts

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"  # the kernelspec every chapter names; `make install` registers the venv under it
CULL_IDLE_MINUTES = 30  # a kernel idle this long is shut down (its memory freed); 0 keeps kernels until closed

SETTINGS = {
    # no "fetch official Jupyter news?" question and no update check: the workbook runs offline
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def overrides_file(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Where JupyterLab reads site-wide setting defaults for this environment."""
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def write_overrides(folder: str | os.PathLike) -> Path:
    """Merge ``SETTINGS`` into ``folder/overrides.json`` (written atomically); return its path."""
    path = Path(folder) / "overrides.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(current, dict):
        raise ValueError(f"{path} does not hold a JSON object; fix or remove it")
    for plugin, values in SETTINGS.items():
        current.setdefault(plugin, {}).update(values)
    artifacts.write_text(path, json.dumps(current, indent=2) + "\n")
    return path


def install_overrides(prefix: str | os.PathLike = sys.prefix) -> Path:
    """``write_overrides`` into the environment's settings folder, where JupyterLab reads them."""
    return write_overrides(overrides_file(prefix).parent)


def command(root: str | os.PathLike = NOTEBOOKS, port: int | None = None, token: str | None = None,
            open_browser: bool = True, app_settings_dir: str | os.PathLike | None = None,
            cull_idle_minutes: int = CULL_IDLE_MINUTES) -> list[str]:
    """The JupyterLab command line: serve ``root``, optionally on a fixed port with a fixed token.

    ``cull_idle_minutes``: shut down a kernel that has run nothing for this long, checked every minute (a
    chapter's kernel holds 1-4.5 GB; a forgotten tab should not hold it all day); 0 turns culling off.

    ``app_settings_dir``: read the site-wide setting defaults (``overrides.json``) from this folder
    instead of the environment's (the browser test's own copy of ``make lab``'s settings).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {root} is not a folder of notebooks")
    args = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}"]
    if port is not None:
        args += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1"]
    if token is not None:
        args.append(f"--IdentityProvider.token={token}")
    if not open_browser:
        args.append("--no-browser")
    if app_settings_dir is not None:
        args.append(f"--LabApp.app_settings_dir={app_settings_dir}")
    if isinstance(cull_idle_minutes, bool) or not isinstance(cull_idle_minutes, int) or cull_idle_minutes < 0:
        raise ValueError(f"cull_idle_minutes must be a whole number of minutes, 0 to turn culling off; got {cull_idle_minutes!r}")
    if cull_idle_minutes:
        args += [f"--MappingKernelManager.cull_idle_timeout={60 * cull_idle_minutes}", "--MappingKernelManager.cull_interval=60"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI run as root; JupyterLab refuses without this
    return args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: JupyterLab's, 8888)")
    parser.add_argument("--cull-idle-minutes", type=int, default=CULL_IDLE_MINUTES,
                        help=f"shut down kernels idle this long (default {CULL_IDLE_MINUTES}; 0: never)")
    options = parser.parse_args(argv)
    if options.cull_idle_minutes < 0:
        parser.error(f"--cull-idle-minutes must be 0 or more; got {options.cull_idle_minutes}")
    install_overrides()
    args = command(port=options.port, open_browser=not options.no_browser, cull_idle_minutes=options.cull_idle_minutes)
    os.execv(args[0], args)


if __name__ == "__main__":
    main()

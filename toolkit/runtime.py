"""Where things live and how a chapter starts: seeds, device, folders, quiet logs.

Every chapter begins with ``toolkit.setup()``. It makes runs repeatable (one seed for
``random``, NumPy and torch), silences library chatter that would bury the lesson, and
prints one line saying where the cache and the results go.

Folders (each can be moved with an environment variable):

- ``WORKBOOK_CACHE``: the fine-tuned classifier and other expensive artefacts
  (default ``~/.cache/compression-workbook``; ``make`` uses ``build/cache``).
- ``WORKBOOK_RESULTS_DIR``: one JSON record per technique, gathered into ``build/report.md``
  (default ``build/results`` of the repository, found from the current directory).

``WORKBOOK_LANGUAGE`` (``en`` or ``zh``) chooses the language of the quizzes, hints, exercise checks and
claim notices (``toolkit.workbook.exercises.language("zh")`` does the same inside a session).

A relative path in either variable is taken relative to the repository root, not to the
current directory: notebooks run from ``notebooks/``, tests and ``make`` from the root, and
all of them must find the same cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

CACHE_ENV = "WORKBOOK_CACHE"
RESULTS_ENV = "WORKBOOK_RESULTS_DIR"
SMOKE_ENV = "WORKBOOK_SMOKE"
LANGUAGE_ENV = "WORKBOOK_LANGUAGE"
LANGUAGES = ("en", "zh")  # the reader-facing messages: quizzes, hints, exercise checks, claim notices

# Loggers whose messages a reader cannot act on: "weights newly initialised" reports for the
# classification head we are about to train, and sentence-transformers' notices.
_NOISY_LOGGERS = (
    "transformers.modeling_utils",
    "sentence_transformers",
)

# What importing torchao prints on a CPU-only torch build, all harmless: "Failed to load
# .../torchao/_C_mxfp8...so" and "_C_cutlass_90a.abi3.so" (optional CUDA kernels this build
# cannot load) and torch's _pytree notice that registering Enum constants is deprecated.
_IMPORT_NOISE_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...], level: int = logging.ERROR):
    """Raise the level of these loggers for the duration of the block, then restore it."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, saved):
            logger.setLevel(old)


def import_torchao_quietly() -> None:
    """Import torchao once, with its known-harmless CPU-build notices silenced for that import only.

    Later ``import torchao`` statements (a chapter's, transformers') reuse the loaded module and
    print nothing; torchao's warnings at run time stay visible.
    """
    with quiet_loggers(_IMPORT_NOISE_LOGGERS), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is an Enum subclass and is now natively supported.*")
        try:
            import torchao  # noqa: F401
            # transformers imports this one when it loads any model (it checks torchao's formats)
            import torchao.prototype.mx_formats  # noqa: F401
        except ImportError:  # pragma: no cover - torchao is a dependency
            pass


def quiet_third_party() -> None:
    """Lower chatty third-party loggers to ERROR and turn off transformers' own progress bars;
    called by ``setup()`` (never on import). Real warnings (``warnings.warn``) stay visible."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:  # transformers' own bars ("Loading weights", "Writing shards") are noise here
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def check_int(name: str, value, *, minimum: int = 1, detail: str = "") -> int:
    """``value`` if it is an integer (``True`` and ``False`` are not) of at least ``minimum``; else a
    ``ValueError`` that names the argument, what it accepts and what it got."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer of at least {minimum}")
        raise ValueError(f"{name} must be {accepted}{detail}; got {value!r}")
    return value


def seed_everything(seed: int = 0) -> None:
    """Seed ``random``, NumPy and torch so that a chapter gives the same numbers each run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device() -> torch.device:
    """The accelerator when there is one, else the CPU. Latencies in the workbook are CPU.

    Taught in: chapter 7, section 9 (N:M sparsity: 2:4).
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


_language: str | None = None  # set by set_language(); None: read WORKBOOK_LANGUAGE, default English


def set_language(code: str) -> str:
    """Choose the language of the messages a reader meets: ``"en"`` or ``"zh"`` (simplified Chinese)."""
    if code not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(map(repr, LANGUAGES))}; got {code!r}")
    global _language
    _language = code
    return code


def language() -> str:
    """The language chosen with ``set_language``, else the ``WORKBOOK_LANGUAGE`` environment variable, else ``"en"``."""
    if _language is not None:
        return _language
    code = os.environ.get(LANGUAGE_ENV, "en").strip().lower() or "en"
    if code not in LANGUAGES:
        raise ValueError(f"{LANGUAGE_ENV} must be one of {', '.join(LANGUAGES)}; got {code!r}")
    return code


def smoke_mode() -> bool:
    """True when ``WORKBOOK_SMOKE=1``: tiny subsets and few steps, for the tests."""
    return os.environ.get(SMOKE_ENV) == "1"


def repo_root(start: Path | None = None) -> Path | None:
    """The workbook repository that contains ``start`` (default: the current directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "toolkit").is_dir():
            return folder
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "pyproject.toml").is_file():
        return package_parent
    return None


def _path_from_env(value: str) -> Path:
    """An environment variable's path; a relative one is anchored at the repository root."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (repo_root() or Path.cwd()) / path
    return path


def cache_dir() -> Path:
    """Folder for the cached classifier and other expensive artefacts (created if missing)."""
    env = os.environ.get(CACHE_ENV)
    path = _path_from_env(env) if env else Path.home() / ".cache" / "compression-workbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Folder of the result records that ``build/report.md`` gathers (created if missing)."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        path = _path_from_env(env)
    else:
        root = repo_root()
        path = (root if root else Path.cwd()) / "build" / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_dir() -> Path:
    """The repository's ``build/`` folder (or ``./build``): files a chapter writes go here.

    Taught in: chapter 1, section 7 (Design task: under 34 MB with casts only).
    """
    root = repo_root()
    path = (root if root else Path.cwd()) / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # Windows: no process-wide symbol table
        return None


def release_memory() -> None:
    """Collect garbage, then ask glibc's allocator to hand free heap pages back to the operating system.

    PyTorch's CPU tensors come from ``malloc``. When a model copy is deleted, glibc keeps much of its memory
    for later requests (any block under its adaptive mmap threshold, which rises to 32 MB after large tensors
    are freed), so the process's resident size, which a JupyterHub memory limit counts, stays near its peak.
    ``malloc_trim(0)`` returns every free page. A no-op where the C library is not glibc.

    Taught in: chapter 10, section 3 (Round-to-nearest in groups: the baseline every method must beat).
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _release_memory_after_each_cell() -> None:
    """In IPython (Jupyter, papermill): hand free heap pages back after every cell (glibc's malloc_trim, a few
    milliseconds), registered once per session."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    callbacks = shell.events.callbacks["post_run_cell"]
    for callback in [c for c in callbacks if getattr(c, "__name__", "") == "_workbook_release_memory"]:
        shell.events.unregister("post_run_cell", callback)

    trim = _malloc_trim()
    if trim is None:
        return

    def _workbook_release_memory(result=None):
        trim(0)  # no gc.collect() here: it takes a quarter of a second with transformers loaded, and a deleted
        #          model is freed by reference counting already

    shell.events.register("post_run_cell", _workbook_release_memory)


def setup(seed: int = 0, *, verbose: bool = True) -> None:
    """Start a chapter: seed everything, quiet the libraries, say where results go.

    Progress bars of the workbook's own loops (tqdm) stay on. In Jupyter, freed memory goes back to the
    operating system after every cell (``release_memory``).

    Taught in: chapter 1.
    """
    quiet_third_party()
    import_torchao_quietly()  # transformers imports it when it loads a model: its CPU-build notices are harmless
    seed_everything(seed)
    _release_memory_after_each_cell()  # a deleted model copy leaves the process's resident memory, not only Python's
    if verbose:
        mode = "smoke (tiny subsets, for tests)" if smoke_mode() else "full"
        print(
            f"toolkit ready: seed={seed}, device={device()}, threads={torch.get_num_threads()}, "
            f"mode={mode}\n  cache:   {cache_dir()}\n  results: {results_dir()}"
        )

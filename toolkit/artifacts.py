"""Every file the toolkit writes, in one place: atomic writes, one manifest, one self-describing tensor file.

Three rules hold for everything the workbook keeps on disk (a cached classifier, a distilled
student, a quantized or pruned model file, a deployable folder, a result record):

1. **Atomic.** A reader sees the old file or the new one, never half of one. A file is written
   under a temporary name in the same folder (so on the same file system), flushed to the disk,
   then renamed over the target with ``os.replace``, which POSIX and Windows make atomic. A folder
   is staged as ``.<name>.partial-<pid>`` beside its target, filled, and renamed into place last;
   a crash leaves the old folder or none, and at worst a staging folder that the next write removes.
2. **One manifest layout** (``manifest.json``, written last into a folder)::

       {"format": "compression-workbook/<kind>", "version": <int>,
        "inputs": {what the contents were built from},
        "files": {"<relative path>": {"sha256": "<hex>", "bytes": <int>}, ...},
        ...fields of the kind}

   ``read_manifest`` checks the format, the version, the inputs and every file's size and SHA-256,
   refuses a path outside the folder, and a folder whose required files are not all listed.
   The hashes sit beside the files: they catch a truncated or damaged copy, not tampering.
3. **One self-describing safetensors file**: the tensors, and string metadata
   ``format``, ``format_version`` (a decimal integer: safetensors metadata holds only strings),
   ``sha256`` (of every tensor's name and bytes, in name order) and the kind's own fields, for a
   whole model ``config`` (its transformers config as JSON, with ``architectures`` naming the
   class to rebuild, as ``save_pretrained`` writes it). ``load_tensors`` checks all three.

Every failure is an ``ArtifactError`` (a ``ValueError``) whose message names the file, what it
should have been, and what to do; ``FormatError``, ``IntegrityError`` and ``UnreadableFileError``
say which check failed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Collection, Iterator, Mapping

if TYPE_CHECKING:  # torch is imported by the functions that handle tensors: the rest needs only the standard library
    import torch

MANIFEST = "manifest.json"


# ----------------------------------------------------------------------------- errors
class ArtifactError(ValueError):
    """A file or folder that is not a complete, unchanged artifact of the kind expected."""


class UnreadableFileError(ArtifactError):
    """A file that should be safetensors cannot be read: truncated, not safetensors, or damaged."""


class FormatError(ArtifactError):
    """A file or folder of another format, or of a version this toolkit does not read."""


class IntegrityError(ArtifactError):
    """Contents that do not match the size or SHA-256 recorded when they were written (or are missing)."""


# ----------------------------------------------------------------------------- hashes
def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (``hashlib.file_digest`` where Python has it, 3.11+)."""
    with open(path, "rb") as handle:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(handle, "sha256").hexdigest()
        digest = hashlib.sha256()  # pragma: no cover - Python 3.10
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, raw bytes) of every tensor in name order: equal hashes, equal tensors."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d tensors too
    return digest.hexdigest()


# ----------------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there. On a clean exit it is flushed to
    disk and renamed over ``path`` (atomic); on an exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:  # the bytes reach the disk before the name points at them
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, content: bytes) -> int:
    """Write ``content`` to ``path`` atomically; return the bytes written."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return len(content)


def write_text(path: str | os.PathLike, text: str) -> int:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the file's bytes."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, *, sort_keys: bool = False) -> int:
    """Write ``value`` as indented JSON to ``path`` atomically; return the file's bytes."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; fill it (manifest last). On a clean exit it
    replaces ``folder``; on an exception it is removed and ``folder`` is untouched.

    ``os.replace`` cannot rename over a folder that has files, so an old folder is first renamed
    aside and removed after the new one is in place: between the two renames ``folder`` is absent,
    never half-written."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for leftover in folder.parent.glob(f".{folder.name}.partial-*"):
        if not _writer_alive(leftover.name.rsplit("-", 1)[-1]):  # a crashed writer's; a live one is still writing
            shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if folder.exists():
            os.replace(folder, retired)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _writer_alive(pid: str) -> bool:
    """True while another process with this id runs (it may be writing the same folder now, e.g. two chapters
    building one cache); our own id counts as gone: a leftover of ours is from an earlier, failed write."""
    import psutil

    return pid.isdigit() and int(pid) != os.getpid() and psutil.pid_exists(int(pid))


# ----------------------------------------------------------------------------- manifests
def file_entries(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{relative POSIX path: {"sha256", "bytes"}} of every file under ``folder`` except the manifest."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}


def write_manifest(folder: str | os.PathLike, *, format: str, version: int, inputs: Mapping | None = None,
                   **fields: Any) -> dict:
    """Write ``manifest.json`` into ``folder`` (atomically, after every other file) and return it."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an integer; got {version!r}")
    manifest = {"format": format, "version": version, "inputs": dict(inputs or {}), **fields,
                "files": file_entries(folder)}
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts and "\\" not in name


def read_manifest(folder: str | os.PathLike, *, format: str, versions: Collection[int], inputs: Mapping | None = None,
                  required: Collection[str] = ()) -> dict:
    """The manifest of a complete, unchanged ``folder`` of this ``format``, else an ``ArtifactError``.

    Checked: the JSON, the format, the version (one of ``versions``), ``inputs`` if given (equal), every
    listed file (inside the folder, present, its size and SHA-256), and that each ``required`` file is listed."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"{folder} does not exist (expected a {format} folder)")
    if not path.is_file():
        raise FormatError(f"{folder} is not a {format} folder: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"{path} is not valid JSON ({error}); write the folder again") from None
    if not isinstance(manifest, dict):
        raise FormatError(f"{path} does not hold a JSON object; write the folder again")
    if manifest.get("format") != format:
        raise FormatError(f"{folder} is not a {format} folder (its manifest says format={manifest.get('format')!r})")
    if manifest.get("version") not in versions:
        raise FormatError(f"{folder} is a {format} folder of version {manifest.get('version')!r}; this toolkit reads "
                          f"version {', '.join(map(str, sorted(versions)))}: write it again with this toolkit")
    if inputs is not None and manifest.get("inputs") != dict(inputs):
        recorded = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
        changed = sorted(k for k in set(inputs) | set(recorded) if recorded.get(k) != inputs.get(k))
        raise ArtifactError(f"{folder} was built from other inputs (differs in: {', '.join(changed)})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and {"sha256", "bytes"} <= set(e) for e in files.values()):
        raise FormatError(f"{path}: 'files' must map each file to its sha256 and bytes; write the folder again")
    for name, entry in files.items():
        if not _safe_name(name):
            raise FormatError(f"{path} lists {name!r}, a path outside the folder; refused")
        file = folder / name
        if not file.is_file():
            raise IntegrityError(f"{folder}: {name} is missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise IntegrityError(f"{folder}: {name} is truncated or changed since it was written (size or SHA-256 differs)")
    missing = sorted(set(required) - set(files))
    if missing:
        raise FormatError(f"{path} does not list {', '.join(missing)}, which a {format} folder must have")
    return manifest


# ----------------------------------------------------------------------------- tensor files
def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], *, format: str, version: int,
                 fields: Mapping[str, Any] = ()) -> int:
    """Write ``tensors`` as safetensors with metadata ``format``, ``format_version``, ``fields`` (strings kept,
    anything else as JSON) and ``sha256`` of the tensors, atomically; return the file's bytes."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {"format": format, "format_version": str(int(version))}
    metadata |= {key: value if isinstance(value, str) else json.dumps(value) for key, value in dict(fields).items()}
    metadata["sha256"] = tensors_sha256(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path).stat().st_size


def read_tensors(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of any safetensors file, or an error that names the file and ``what`` it should be.

    The library's own messages ("HeaderTooLarge", "invalid JSON in header") do not say which
    file or what to do; a truncated download or a file of another format gets this instead.

    Taught in: chapter 7, section 3 (Surgery: cutting the matrices).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {path} does not exist (expected {what})")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError / OSError / RuntimeError for broken files
        raise UnreadableFileError(
            f"{path} ({path.stat().st_size:,} bytes) cannot be read as {what}: it is truncated, damaged or not a "
            f"safetensors file ({type(error).__name__}: {error}). Write it again (save it anew)."
        ) from error
    return metadata, tensors


def load_tensors(path: str | os.PathLike, *, format: str, versions: Collection[int], writer: str,
                 unversioned: int | None = None) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a ``save_tensors`` file of this ``format``, with its version and hash checked.

    ``writer`` names the function that writes the format (for the messages); ``unversioned`` is the version
    to assume for files written before the format recorded one (None: such files are refused)."""
    path = Path(path)
    metadata, tensors = read_tensors(path, f"a {format} file ({writer})")
    if metadata.get("format") != format:
        raise FormatError(f"{path} is not a {format} file (format={metadata.get('format')!r}); write it with {writer}")
    recorded = metadata.get("format_version")
    version = unversioned if recorded is None else (int(recorded) if str(recorded).isdigit() else recorded)
    if version not in versions:
        raise FormatError(f"{path} has format version {recorded!r}; this toolkit reads version "
                          f"{', '.join(map(str, sorted(versions)))} of {format}: write it again with {writer}")
    if tensors_sha256(tensors) != metadata.get("sha256"):
        raise IntegrityError(f"{path}: tensor contents do not match the sha256 in its metadata (file changed or corrupted)")
    return metadata, tensors


# ----------------------------------------------------------------------------- whole transformers models
def config_json(model: torch.nn.Module) -> str:
    """The model's transformers config as JSON with ``architectures`` = [its class], as ``save_pretrained`` writes it.

    Refused here, when saving, for a model that ``model_from_config`` could not rebuild: one without a
    ``config`` or whose class is not a transformers class."""
    import transformers

    name = type(model).__name__
    if not hasattr(model, "config") or not hasattr(model.config, "to_json_string"):
        raise TypeError(f"a {name} has no transformers config: this file format holds transformers models only")
    if getattr(transformers, name, None) is not type(model):
        raise TypeError(f"{name} is not a transformers model class, so a file could not rebuild it; "
                        f"save a transformers model (e.g. BertForSequenceClassification)")
    config = copy.deepcopy(model.config)
    config.architectures = [name]
    return config.to_json_string(use_diff=False)


def model_from_config(text: str, *, architecture: str | None = None) -> torch.nn.Module:
    """A freshly initialised transformers model of the config saved by ``config_json``, of the class its
    ``architectures`` names, or of ``architecture`` when given (for files that did not record the class)."""
    import transformers

    config_dict = json.loads(text)
    config = transformers.AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    name = architecture or (config.architectures or [None])[0]
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise FormatError(f"the file's config names the class {name!r}, which this transformers "
                          f"({transformers.__version__}) does not have")
    return cls.from_config(config) if name.startswith("Auto") else cls(config)

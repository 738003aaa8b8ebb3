"""toolkit.artifacts: atomic writes that survive a killed writer, the one manifest, the one tensor file,
and every model file format round-tripping (identical logits) on the BERT, RoBERTa, DistilBERT and GPT-2 layouts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from toolkit import artifacts
from toolkit.prune import storage, structured
from toolkit.quant import QuantSpec, fileformat, quantize_weights

ROOT = Path(__file__).resolve().parent.parent

LAYOUTS = {  # tiny random models of four layouts transformers users meet
    "bert": lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, num_labels=2)),
    "roberta": lambda: transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, num_labels=2,
        max_position_embeddings=40)),
    "distilbert": lambda: transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, num_labels=2)),
    "gpt2": lambda: transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=40, num_labels=2, pad_token_id=0)),
}
IDS = torch.tensor([[5, 17, 42, 8, 3, 0], [9, 11, 2, 7, 0, 0]])
MASK = (IDS != 0).long()


def model_of(layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return LAYOUTS[layout]().eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


# ----------------------------------------------------------------------------- atomic writes
WRITER = """
import sys, time
from toolkit import artifacts
with artifacts.atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as f:
    for _ in range(10_000):
        f.write(b"new " * 4096); f.flush(); print("writing", flush=True); time.sleep(0.01)
"""

FOLDER_WRITER = """
import sys, time
from pathlib import Path
from toolkit import artifacts
with artifacts.staged_folder(sys.argv[1]) as staging:
    (staging / "a.txt").write_text("new")
    print("writing", flush=True); time.sleep(60)
"""


def _kill_while_writing(script: str, target: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    os.kill(writer.pid, signal.SIGKILL)  # no finally clause runs: as a power cut or an OOM kill would
    writer.wait(timeout=30)


def test_a_killed_file_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    artifacts.write_text(target, "old")
    _kill_while_writing(WRITER, target)
    assert target.read_text() == "old"
    assert artifacts.write_json(target, {"new": 1}) > 0 and json.loads(target.read_text()) == {"new": 1}


def test_a_killed_folder_writer_leaves_the_old_folder_and_the_next_write_cleans_up(tmp_path):
    folder = tmp_path / "cache"
    with artifacts.staged_folder(folder) as staging:
        (staging / "a.txt").write_text("old")
    _kill_while_writing(FOLDER_WRITER, folder)
    assert (folder / "a.txt").read_text() == "old"
    assert list(tmp_path.glob(".cache.partial-*")), "the killed writer's staging folder is still there"
    with artifacts.staged_folder(folder) as staging:
        (staging / "a.txt").write_text("newer")
    assert (folder / "a.txt").read_text() == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    (tmp_path / f".cache.partial-{os.getppid()}").mkdir()  # a live process's staging folder: it may be writing now
    with artifacts.staged_folder(folder) as staging:
        (staging / "a.txt").write_text("newest")
    assert (tmp_path / f".cache.partial-{os.getppid()}").is_dir(), "another live writer's staging folder is left alone"


def test_a_failing_writer_changes_nothing(tmp_path):
    target, folder = tmp_path / "f.txt", tmp_path / "d"
    artifacts.write_text(target, "old")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError), artifacts.staged_folder(folder) as staging:
        (staging / "x").write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and not folder.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    folder.mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"), artifacts.staged_folder(folder, overwrite=False):
        pass


# ----------------------------------------------------------------------------- manifest
def test_the_manifest_records_every_file_and_catches_each_problem(tmp_path):
    with artifacts.staged_folder(tmp_path / "f") as staging:
        (staging / "weights.bin").write_bytes(b"\x00" * 100)
        (staging / "sub").mkdir()
        (staging / "sub" / "vocab.txt").write_text("a\nb\n")
        written = artifacts.write_manifest(staging, format="test/kind", version=3, inputs={"seed": 0}, note="x")
    folder = tmp_path / "f"
    assert set(written) == {"format", "version", "inputs", "note", "files"}
    assert written["files"]["sub/vocab.txt"] == {"sha256": artifacts.sha256_file(folder / "sub" / "vocab.txt"), "bytes": 4}
    read = lambda **kw: artifacts.read_manifest(folder, **({"format": "test/kind", "versions": (3,)} | kw))  # noqa: E731
    assert read(inputs={"seed": 0}, required=("weights.bin",)) == written
    with pytest.raises(artifacts.ArtifactError, match="built from other inputs .differs in: seed"):
        read(inputs={"seed": 1})
    with pytest.raises(artifacts.FormatError, match="version 3; this toolkit reads version 4"):
        read(versions=(4,))
    with pytest.raises(artifacts.FormatError, match="not a other/kind folder .its manifest says format='test/kind'"):
        read(format="other/kind")
    with pytest.raises(artifacts.FormatError, match="does not list config.json"):
        read(required=("config.json",))
    (folder / "weights.bin").write_bytes(b"\x00" * 99)
    with pytest.raises(artifacts.IntegrityError, match="weights.bin is truncated or changed"):
        read()
    (folder / "weights.bin").unlink()
    with pytest.raises(artifacts.IntegrityError, match="weights.bin is missing"):
        read()
    with pytest.raises(artifacts.FormatError, match="has no manifest.json"):
        artifacts.read_manifest(tmp_path, format="test/kind", versions=(3,))
    with pytest.raises(TypeError, match="version must be an integer"):
        artifacts.write_manifest(folder, format="test/kind", version="3")


def test_sha256_file_agrees_with_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "b"
    path.write_bytes(os.urandom(3_000_000))
    assert artifacts.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- tensor files
def test_tensor_files_check_format_version_and_hash(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(3, dtype=torch.int8)}
    size = artifacts.save_tensors(path, tensors, format="test/t", version=2, fields={"shapes": {"x": [1, 2]}, "note": "s"})
    assert size == path.stat().st_size
    metadata, loaded = artifacts.load_tensors(path, format="test/t", versions=(2,), writer="save_t")
    assert metadata["format_version"] == "2" and json.loads(metadata["shapes"]) == {"x": [1, 2]} and metadata["note"] == "s"
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with pytest.raises(artifacts.FormatError, match="format version '2'; this toolkit reads version 1 of test/t: write it again with save_t"):
        artifacts.load_tensors(path, format="test/t", versions=(1,), writer="save_t")
    unversioned = {k: v for k, v in metadata.items() if k != "format_version"}
    save_file(loaded, str(tmp_path / "old.safetensors"), metadata=unversioned)
    with pytest.raises(artifacts.FormatError, match="format version None"):
        artifacts.load_tensors(tmp_path / "old.safetensors", format="test/t", versions=(1,), writer="save_t")
    assert artifacts.load_tensors(tmp_path / "old.safetensors", format="test/t", versions=(1,), writer="save_t", unversioned=1)
    save_file(loaded | {"a": torch.tensor(4, dtype=torch.int8)}, str(tmp_path / "edited.safetensors"), metadata=metadata)
    with pytest.raises(artifacts.IntegrityError, match="do not match the sha256"):
        artifacts.load_tensors(tmp_path / "edited.safetensors", format="test/t", versions=(2,), writer="save_t")


def test_a_model_the_file_cannot_rebuild_is_refused_when_saving(tmp_path):
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = transformers.BertConfig()

    with pytest.raises(TypeError, match="Custom is not a transformers model class"):
        artifacts.config_json(Custom())
    with pytest.raises(TypeError, match="no transformers config"):
        artifacts.config_json(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- every format, four layouts
INT8_ROWS = QuantSpec(bits=8, granularity="channel", axis=0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_quantized_files_round_trip_on_every_layout(tmp_path, layout):
    model = model_of(layout)
    quantized = quantize_weights(model, INT8_ROWS, QuantSpec(bits=8, granularity="channel", axis=0))
    path = tmp_path / f"{layout}.safetensors"
    fileformat.save_quantized(quantized, path)
    reloaded = fileformat.load_quantized(path)
    assert type(reloaded) is type(model)
    assert torch.equal(logits(reloaded), logits(quantized))


def test_a_version_1_quantized_file_still_loads(tmp_path):
    """Version 1 did not record the class (only sequence classifiers were written): read as one."""
    quantized = quantize_weights(model_of("bert"), INT8_ROWS)
    fileformat.save_quantized(quantized, tmp_path / "v2.safetensors")
    with safe_open(str(tmp_path / "v2.safetensors"), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["config"]) | {"architectures": ["BertModel"]}  # what a v1 file could hold
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata=metadata | {"format_version": "1", "config": json.dumps(config)})
    assert torch.equal(logits(fileformat.load_quantized(tmp_path / "v1.safetensors")), logits(quantized))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sparse_files_round_trip_or_are_refused_when_saving(tmp_path, layout):
    model = model_of(layout)
    path = tmp_path / "sparse.safetensors"
    if layout == "gpt2":  # Conv1D layers are not pruned, so a sparse file would hold no sparse layer
        with pytest.raises(ValueError, match="change no layer inside the model's blocks"), pytest.warns(UserWarning):
            storage.save_sparse(model, path)
        assert not path.exists()
        return
    storage.save_sparse(model, path, layout="bitmask")
    reloaded = model_of(layout)
    reloaded.load_state_dict(storage.load_sparse_state_dict(path))
    assert torch.equal(logits(reloaded), logits(model))


def test_a_sparse_file_written_before_versions_still_loads(tmp_path):
    model = model_of("bert")
    storage.save_sparse(model, tmp_path / "v.safetensors")
    with safe_open(str(tmp_path / "v.safetensors"), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={k: v for k, v in metadata.items() if k != "format_version"})
    state = storage.load_sparse_state_dict(tmp_path / "old.safetensors")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_pruned_files_round_trip_or_are_refused_when_saving(tmp_path, layout):
    model = model_of(layout)
    path = tmp_path / "pruned.safetensors"
    if layout in ("distilbert", "gpt2"):  # not the BERT layout the file records shapes of
        with pytest.raises(ValueError, match="BERT layout"):
            structured.save_pruned(model, path)
        assert not path.exists()
        return
    pruned = structured.prune_structures(model, heads={0: [1, 3]}, neurons={1: list(range(10))})
    structured.save_pruned(pruned, path)
    assert torch.equal(logits(structured.load_pruned(path)), logits(pruned))
    with pytest.raises(TypeError, match="BERT-layout sequence classifiers; got a (Bert|Roberta)Model"):
        structured.save_pruned(model.base_model, path)

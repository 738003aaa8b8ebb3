"""The deployable artifact (toolkit.deploy): save, verify, load, predict, and the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from toolkit import deploy, layers, models
from toolkit.prune import structured

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer():
    return models.tokenizer()


@pytest.fixture(scope="module")
def classifier_model(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = BertForSequenceClassification(config).eval()
    return structured.prune_structures(model, heads={0: [1]}, neurons={1: list(range(10))})  # uneven shapes


TEXTS = ["great phone, works perfectly", "awful battery, broke in a week", "ok"]


def test_round_trip_gives_the_same_predictions(tmp_path, classifier_model, tokenizer):
    manifest = deploy.save(classifier_model, tokenizer, tmp_path / "artifact", card={"limits": "English reviews only."})
    assert set(manifest["files"]) >= {"model.safetensors", "tokenizer.json", "README.md"}
    loaded = deploy.load(tmp_path / "artifact")
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        expected = classifier_model(**batch).logits
    torch.testing.assert_close(loaded.logits(TEXTS), expected)
    predictions = loaded.predict(TEXTS)
    assert [p.label for p in predictions] == [["negative", "positive"][i] for i in expected.argmax(-1).tolist()]
    assert all(0.5 <= p.probability <= 1 for p in predictions)
    assert layers.heads_per_layer(loaded.model) == [3, 4]
    card = (tmp_path / "artifact" / "README.md").read_text()
    assert "English reviews only." in card and "negative, positive" in card


def test_bfloat16_artifact_runs_in_bfloat16(tmp_path, classifier_model, tokenizer):
    deploy.save(classifier_model, tokenizer, tmp_path / "bf16", dtype="bfloat16")
    loaded = deploy.load(tmp_path / "bf16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.logits(TEXTS).dtype == torch.float32


def test_a_changed_or_incomplete_artifact_is_refused(tmp_path, classifier_model, tokenizer):
    folder = tmp_path / "artifact"
    deploy.save(classifier_model, tokenizer, folder)
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(deploy.ArtifactError, match="tokenizer.json is truncated or changed since it was written"):
        deploy.load(folder)
    deploy.save(classifier_model, tokenizer, folder, overwrite=True)
    (folder / "model.safetensors").unlink()
    with pytest.raises(deploy.ArtifactError, match="model.safetensors is missing"):
        deploy.load(folder)
    with pytest.raises(deploy.ArtifactError, match="has no manifest.json"):
        deploy.load(tmp_path)


def test_bad_arguments_are_clear_errors(tmp_path, classifier_model, tokenizer):
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16; got 'int3'"):
        deploy.save(classifier_model, tokenizer, tmp_path / "a", dtype="int3")
    with pytest.raises(ValueError, match="unknown model card field"):
        deploy.save(classifier_model, tokenizer, tmp_path / "a", card={"speed": "fast"})
    deploy.save(classifier_model, tokenizer, tmp_path / "a")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        deploy.save(classifier_model, tokenizer, tmp_path / "a")
    with pytest.raises(TypeError, match="list of strings"):
        deploy.load(tmp_path / "a").predict("one sentence")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"], "no staging or retired folder is left behind"


IMPORTS_OF_DEPLOY = """
import json, runpy, sys, time
start = time.perf_counter()
import toolkit.deploy
seconds = time.perf_counter() - start
sys.argv = ["toolkit.deploy", *sys.argv[1:]]
try:
    runpy.run_module("toolkit.deploy", run_name="__main__")
except SystemExit as done:
    print(json.dumps({"code": done.code, "seconds": seconds, "modules": sorted(sys.modules)}))
"""


def _cli_modules(folder: Path) -> list[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", IMPORTS_OF_DEPLOY, str(folder), "great phone"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["code"] == 0 and "great phone" in run.stdout
    assert "Failed to load" not in run.stderr, "torchao's CPU-build notices reach the user"
    print(f"benchmark: importing toolkit.deploy took {result['seconds']:.2f} s here (not asserted)")
    return result["modules"]


def test_the_command_line_loads_neither_torchao_nor_the_exercises(tmp_path, classifier_model, tokenizer):
    from toolkit import engines

    ov_model = engines.openvino_model(classifier_model, dict(tokenizer(TEXTS, padding=True, return_tensors="pt")))
    deploy.save_openvino(ov_model, tokenizer, tmp_path / "ov", labels=["negative", "positive"])
    loaded = [m for m in _cli_modules(tmp_path / "ov")
              if m.split(".")[0] == "torchao" or m.startswith(("toolkit.workbook.exercises", "toolkit.quant", "toolkit.models"))]
    assert not loaded, f"python -m toolkit.deploy loaded {loaded[:5]}"
    # a PyTorch artifact: transformers itself imports torchao (when installed) as it builds any model; the toolkit's
    # own quantization code and the exercises still stay out
    deploy.save(classifier_model, tokenizer, tmp_path / "torch")
    loaded = [m for m in _cli_modules(tmp_path / "torch") if m.startswith(("toolkit.workbook.exercises", "toolkit.quant", "toolkit.models"))]
    assert not loaded, f"python -m toolkit.deploy loaded {loaded[:5]}"


def test_command_line_classifies_and_reports_errors(tmp_path, classifier_model, tokenizer):
    deploy.save(classifier_model, tokenizer, tmp_path / "artifact")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "toolkit.deploy", str(tmp_path / "artifact"), "--json", *TEXTS[:2]],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["text"] for line in lines] == TEXTS[:2] and {line["label"] for line in lines} <= {"negative", "positive"}
    missing = subprocess.run([sys.executable, "-m", "toolkit.deploy", str(tmp_path / "nothing"), "hi"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert missing.returncode == 2 and "does not exist (expected a compression-workbook/classifier-artifact folder)" in missing.stderr


def test_edge_inputs_empty_long_and_non_string(tmp_path, classifier_model, tokenizer):
    deploy.save(classifier_model, tokenizer, tmp_path / "artifact")
    loaded = deploy.load(tmp_path / "artifact")
    assert loaded.predict([]) == [] and loaded.logits([]).shape == (0, 2)
    assert len(loaded.predict([""])) == 1  # an empty sentence is [CLS] [SEP]: classified, not an error
    long = "good " * 5000  # far past the 64-token truncation length
    assert len(loaded.predict([long])) == 1
    torch.testing.assert_close(loaded.logits([long]), loaded.logits(["good " * 62]))  # only the first 62 words are read
    with pytest.raises(TypeError, match="list of strings"):
        loaded.predict(["fine", 3])


def test_openvino_artifact_round_trip_and_fresh_process(tmp_path, classifier_model, tokenizer):
    from toolkit import engines

    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    ov_model = engines.openvino_model(classifier_model, batch)
    manifest = deploy.save_openvino(ov_model, tokenizer, tmp_path / "ov", labels=["negative", "positive"],
                                    card={"measurements": "measured nowhere"})
    assert manifest["runtime"] == "openvino" and {"model.xml", "model.bin", "tokenizer.json"} <= set(manifest["files"])
    loaded = deploy.load(tmp_path / "ov")
    assert isinstance(loaded.model, engines.EngineClassifier)
    with torch.inference_mode():
        expected = classifier_model(**batch).logits
    torch.testing.assert_close(loaded.logits(TEXTS), expected, atol=0.05, rtol=0.05)  # OpenVINO may compute in bf16
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "toolkit.deploy", str(tmp_path / "ov"), "--json", *TEXTS],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["label"] for line in run.stdout.splitlines()] == [p.label for p in loaded.predict(TEXTS)]
    with open(tmp_path / "ov" / "model.bin", "r+b") as f:  # one flipped byte in the weights
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(deploy.ArtifactError, match="model.bin is truncated or changed"):
        deploy.load(tmp_path / "ov")
    with pytest.raises(ValueError, match="labels must be a list of at least two label names"):
        deploy.save_openvino(ov_model, tokenizer, tmp_path / "x", labels="positive")


def test_a_foreign_manifest_is_refused(tmp_path, classifier_model, tokenizer):
    folder = tmp_path / "artifact"
    deploy.save(classifier_model, tokenizer, folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "compression-workbook/classifier-artifact" and manifest["version"] == 2
    path.write_text(json.dumps(manifest | {"format": "someone-else/model"}))
    with pytest.raises(deploy.ArtifactError, match="is not a compression-workbook/classifier-artifact folder"):
        deploy.load(folder)
    path.write_text(json.dumps(manifest | {"runtime": "tensorrt"}))
    with pytest.raises(deploy.ArtifactError, match="runtime 'tensorrt' is not one of torch, openvino"):
        deploy.load(folder)
    path.write_text("{not json")
    with pytest.raises(deploy.ArtifactError, match="manifest.json is not valid JSON"):
        deploy.load(folder)
    files = dict(manifest["files"])
    path.write_text(json.dumps(manifest | {"files": {k: v for k, v in files.items() if k != "model.safetensors"}}))
    with pytest.raises(deploy.ArtifactError, match="does not list model.safetensors, which the torch runtime reads"):
        deploy.load(folder)
    path.write_text(json.dumps(manifest | {"files": files | {"../secret": files["README.md"]}}))
    with pytest.raises(deploy.ArtifactError, match="a path outside the folder"):
        deploy.load(folder)
    path.write_text(json.dumps(manifest | {"files": files | {"/etc/passwd": files["README.md"]}}))
    with pytest.raises(deploy.ArtifactError, match="a path outside the folder"):
        deploy.load(folder)
    path.write_text(json.dumps(manifest | {"files": ["model.safetensors"]}))
    with pytest.raises(deploy.ArtifactError, match="'files' must map each file to its sha256 and bytes"):
        deploy.load(folder)
    path.unlink()  # an artifact of version 1 kept its manifest in artifact.json
    (folder / "artifact.json").write_text(json.dumps(manifest | {"version": 1}))
    with pytest.raises(deploy.ArtifactError, match="v1 artifact .artifact.json., written by an earlier toolkit"):
        deploy.load(folder)


@pytest.mark.parametrize("change, field", [
    (lambda m: [m], "JSON object"),                                   # the manifest is a list
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "'files' must map"),
    (lambda m: {k: v for k, v in m.items() if k != "labels"}, "'labels' must be a list of at least two label names; got None"),
    (lambda m: m | {"labels": ["positive"]}, "'labels' must be a list of at least two label names; got \\['positive'\\]"),
    (lambda m: m | {"labels": "negative,positive"}, "'labels' must be a list"),
    (lambda m: m | {"labels": ["negative", "neutral", "positive"]}, "'labels' name 3 classes, the model has 2 outputs"),
    (lambda m: m | {"dtype": "float16"}, "'dtype' must be one of float32, bfloat16 for the torch runtime; got 'float16'"),
    (lambda m: m | {"max_length": -1}, "'max_length' must be an integer from 2 to 1,000,000; got -1"),
    (lambda m: m | {"max_length": 10**30}, "'max_length' must be an integer"),
    (lambda m: m | {"max_length": "64"}, "'max_length' must be an integer"),
    (lambda m: {k: v for k, v in m.items() if k != "runtime"}, "runtime None is not one of torch, openvino"),
], ids=["list", "no-files", "no-labels", "one-label", "labels-string", "labels-count", "float16", "max-length-negative",
        "max-length-huge", "max-length-string", "no-runtime"])
def test_a_malformed_manifest_is_an_artifact_error_naming_the_field(tmp_path, classifier_model, tokenizer, change, field):
    folder = tmp_path / "artifact"
    deploy.save(classifier_model, tokenizer, folder)
    path = folder / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(deploy.ArtifactError, match=field):
        deploy.load(folder)


def test_the_model_card_says_the_hashes_detect_corruption_not_tampering(tmp_path, classifier_model, tokenizer):
    deploy.save(classifier_model, tokenizer, tmp_path / "artifact")
    card = (tmp_path / "artifact" / "README.md").read_text()
    assert "detects a file damaged or cut short" in card and "does not detect tampering" in card


def test_command_line_reads_stdin_and_files_and_refuses_empty_or_binary_input(tmp_path, classifier_model, tokenizer):
    deploy.save(classifier_model, tokenizer, tmp_path / "artifact")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def cli(*args, stdin=b""):
        return subprocess.run([sys.executable, "-m", "toolkit.deploy", str(tmp_path / "artifact"), *args], input=stdin,
                              capture_output=True, cwd=ROOT, env=env, timeout=300)

    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:2]) + "\n\n")
    piped = cli("--json", "-", "--file", str(tmp_path / "in.txt"), stdin="\n".join(TEXTS).encode())
    assert piped.returncode == 0, piped.stderr
    lines = [json.loads(line) for line in piped.stdout.decode().splitlines()]
    assert [line["text"] for line in lines] == TEXTS + TEXTS[:2], "stdin first, then the file; blank lines skipped"
    assert "5 sentence(s) in" in piped.stderr.decode() and "sentences per second" in piped.stderr.decode()
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    for args, stdin, message in ((["--file", str(tmp_path / "empty.txt")], b"", "no sentences to classify"),
                                 (["--file", str(tmp_path / "binary.bin")], b"", "is not UTF-8 text"),
                                 (["-"], b"\x00\x01\x02", "holds NUL bytes"),
                                 (["--file", str(tmp_path / "absent.txt")], b"", "absent.txt"),
                                 ([], b"", "no sentences to classify")):
        run = cli(*args, stdin=stdin)
        assert run.returncode == 2 and message in run.stderr.decode(), (args, run.stderr.decode())


def _openvino_artifact(folder, model, tokenizer):
    from toolkit import engines

    ov_model = engines.openvino_model(model, dict(tokenizer(TEXTS, padding=True, return_tensors="pt")))
    deploy.save_openvino(ov_model, tokenizer, folder, labels=["negative", "positive"])
    return folder


def test_the_openvino_artifact_carries_a_predict_py_that_needs_no_workbook(tmp_path, classifier_model, tokenizer):
    import ast

    from toolkit import standalone

    folder = _openvino_artifact(tmp_path / "ov", classifier_model, tokenizer)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "predict.py" in manifest["files"] and (folder / "predict.py").read_text() == Path(standalone.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse((folder / "predict.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "argparse", "hashlib", "json", "sys", "time", "pathlib", "numpy", "openvino", "tokenizers"}, imported
    mine, theirs = standalone.Classifier(folder), deploy.load(folder)
    sentences = TEXTS + ["", "good " * 300]  # empty and past the truncation length
    np_logits = mine.logits(sentences)
    torch.testing.assert_close(torch.from_numpy(np_logits), theirs.logits(sentences), atol=1e-4, rtol=1e-4)
    assert [label for label, _ in mine.predict(sentences)] == [p.label for p in theirs.predict(sentences)]
    with open(folder / "model.bin", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(standalone.ArtifactError, match="model.bin is missing, truncated or changed"):
        standalone.Classifier(folder)
    assert "pip install openvino tokenizers numpy" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_predict_py_in_a_bare_venv_gives_the_workbooks_labels_for_every_test_sentence(tmp_path, tokenizer):
    """A fresh virtual environment with only openvino, tokenizers and numpy (the pinned versions, from the same registry)
    runs the artifact's predict.py on the 450 test sentences and gets the labels the workbook's loader gives."""
    import shutil
    import venv

    from toolkit import data

    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.split("==")[0] in ("openvino", "tokenizers", "numpy")]
    env_dir = ROOT / "build" / "standalone-venv" / "-".join(p.replace("==", "") for p in sorted(pins))
    python = env_dir / "bin" / "python"
    if not python.exists():  # built once per set of pins, then reused
        shutil.rmtree(env_dir, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "torch" not in listed and "transformers" not in listed, "the bare venv has neither torch nor transformers"
    model = models.sentiment_classifier(smoke=True, progress=False)
    folder = _openvino_artifact(tmp_path / "artifact", model, tokenizer)
    test = [e.text for e in data.make_splits().test]
    (tmp_path / "test.txt").write_text("\n".join(t.replace("\n", " ") for t in test) + "\n")
    run = subprocess.run([str(python), str(folder / "predict.py"), "--json", "--file", str(tmp_path / "test.txt")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")})
    assert run.returncode == 0, run.stderr[-3000:]
    got = [json.loads(line)["label"] for line in run.stdout.splitlines()]
    expected = [p.label for p in deploy.load(folder).predict(test)]
    assert len(got) == len(test) == 450 and got == expected
    print(f"bare venv: {run.stderr.strip().splitlines()[-1]} (450 of 450 labels as the workbook's loader gives)")

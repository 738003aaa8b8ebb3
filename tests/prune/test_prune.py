"""Importance scores, masks (local, global, N:M), torch.nn.utils.prune, sparse storage and timing."""

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from toolkit import activations, artifacts, measure, models, prune
from toolkit.prune import storage


@pytest.fixture(scope="module")
def classifier():
    return models.sentiment_classifier(smoke=True, progress=False)


def random_scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.rand(8, 16, generator=g), "b": torch.rand(4, 16, generator=g) * 0.5}


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_local_masks_remove_exactly_the_lowest_scores_of_each_layer(sparsity):
    scores = random_scores()
    masks = prune.local_masks(scores, sparsity)
    for name, s in scores.items():
        assert masks[name].sum() == s.numel() - round(sparsity * s.numel())
        if 0 < sparsity:
            assert s[masks[name] == 1].min() > s[masks[name] == 0].max()


def test_global_masks_use_one_threshold_and_prune_small_layers_more():
    scores = random_scores()
    masks = prune.global_masks(scores, 0.5)
    kept = sum(m.sum() for m in masks.values())
    assert kept == 96  # 192 scores, all distinct
    all_kept = torch.cat([scores[n][masks[n] == 1] for n in scores])
    all_dropped = torch.cat([scores[n][masks[n] == 0] for n in scores])
    assert all_kept.min() > all_dropped.max()
    assert masks["b"].mean() < masks["a"].mean()  # layer b's scores are half as large


def test_toolkit_masks_agree_with_torch_nn_utils_prune():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 4))
    scores = {"0": model[0].weight.detach().abs(), "1": model[1].weight.detach().abs()}
    import copy

    local_ref = copy.deepcopy(model)
    torch_prune.l1_unstructured(local_ref[0], "weight", amount=0.5)
    assert torch.equal(local_ref[0].weight_mask, prune.local_masks(scores, 0.5)["0"])
    global_ref = copy.deepcopy(model)
    torch_prune.global_unstructured([(global_ref[0], "weight"), (global_ref[1], "weight")], torch_prune.L1Unstructured, amount=0.6)
    ours = prune.global_masks(scores, 0.6)
    assert torch.equal(global_ref[0].weight_mask, ours["0"]) and torch.equal(global_ref[1].weight_mask, ours["1"])


def test_nm_masks_keep_n_of_every_m():
    masks = prune.nm_masks(random_scores(), 2, 4)
    for m in masks.values():
        assert torch.all(m.reshape(-1, 4).sum(dim=1) == 2)


def test_kept_overlap():
    scores = random_scores()
    a = prune.local_masks(scores, 0.5)
    assert prune.kept_overlap(a, a) == 1.0
    b = {n: 1 - m for n, m in a.items()}
    assert prune.kept_overlap(a, b) == 0.0


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "0.5", True, None])
def test_bad_sparsity_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        prune.local_masks(random_scores(), bad)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        prune.global_masks(random_scores(), bad)


def test_bad_nm_and_names_and_criteria(classifier):
    with pytest.raises(ValueError, match="m=3 does not divide the input dimension 16 of a"):
        prune.nm_masks(random_scores(), 1, 3)
    with pytest.raises(ValueError, match="0 < n < m"):
        prune.nm_masks(random_scores(), 4, 4)
    with pytest.raises(ValueError, match="criterion must be one of magnitude, gradient, taylor, activation"):
        prune.importance(classifier, "hessian")
    with pytest.raises(ValueError, match=r"module names \['bert.nope'\] are not nn.Linear layers"):
        prune.importance(classifier, "magnitude", modules=["bert.nope"])
    with pytest.raises(ValueError, match="needs tokenizer= and a non-empty examples="):
        prune.importance(classifier, "taylor")
    with pytest.raises(ValueError, match=r"module names \['x'\] are not layers with a weight"):
        prune.apply_masks(classifier, {"x": torch.ones(1)})


def test_default_modules_are_the_encoder_linears(classifier):
    names = prune.prunable_modules(classifier)
    assert len(names) == 36 and all(n.startswith("bert.encoder.layer.") for n in names)


def test_gradient_scores_leave_the_model_as_it_was(classifier, tokenizer, splits):
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    flags = [p.requires_grad for p in classifier.parameters()]
    classifier.eval()
    name = "bert.encoder.layer.0.intermediate.dense"
    grads = prune.importance(classifier, "gradient", tokenizer, splits.train[:16], modules=[name])
    taylor = prune.importance(classifier, "taylor", tokenizer, splits.train[:16], modules=[name])
    w = classifier.get_submodule(name).weight.detach()
    assert grads[name].shape == w.shape and (grads[name] >= 0).all() and grads[name].sum() > 0
    # one batch: taylor = |w * g| = |w| * |g|
    assert torch.allclose(taylor[name], w.abs() * grads[name], rtol=1e-5, atol=1e-12)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert [p.requires_grad for p in classifier.parameters()] == flags
    assert all(p.grad is None for p in classifier.parameters()) and not classifier.training


def test_activation_scores_are_weight_times_input_norm(classifier, tokenizer, splits):
    name = "bert.encoder.layer.1.attention.self.query"
    scores = prune.importance(classifier, "activation", tokenizer, splits.train[:20], modules=[name])[name]
    x = activations.record_outputs(classifier, ["bert.encoder.layer.0"], tokenizer, splits.train[:20])["bert.encoder.layer.0"]
    expected = classifier.get_submodule(name).weight.detach().abs() * x.norm(dim=0).reshape(1, -1)
    assert torch.allclose(scores, expected, rtol=1e-4)


def test_magnitude_l1_and_l2_rank_weights_alike(classifier):
    l1 = prune.importance(classifier, "magnitude", p=1)
    l2 = prune.importance(classifier, "magnitude", p=2)
    assert all(torch.equal(prune.local_masks(l1, 0.5)[n], prune.local_masks(l2, 0.5)[n]) for n in l1)


def test_apply_masks_copies_and_the_hooks_keep_pruned_weights_at_zero(classifier, tokenizer, splits):
    scores = prune.importance(classifier, "magnitude")
    masks = prune.global_masks(scores, 0.5)
    before = classifier.bert.encoder.layer[0].intermediate.dense.weight.clone()
    pruned = prune.apply_masks(classifier, masks)
    assert torch.equal(classifier.bert.encoder.layer[0].intermediate.dense.weight, before)
    assert abs(sum(prune.sparsity_report(pruned).values()) / 36 - 0.5) < 0.2

    import copy

    hooked = prune.apply_masks_(copy.deepcopy(classifier), masks)
    layer = hooked.bert.encoder.layer[0].intermediate.dense
    assert hasattr(layer, "weight_orig") and hasattr(layer, "weight_mask")
    from toolkit.train import FineTuneConfig, fine_tune_

    fine_tune_(hooked, tokenizer, splits.train, FineTuneConfig(epochs=1, train_limit=32, learning_rate=1e-3), progress=False)
    assert torch.all(layer.weight[masks["bert.encoder.layer.0.intermediate.dense"] == 0] == 0)
    assert prune.remove_masks_(hooked) == 36
    assert not hasattr(layer, "weight_orig") and isinstance(layer.weight, torch.nn.Parameter)
    assert torch.all(layer.weight[masks["bert.encoder.layer.0.intermediate.dense"] == 0] == 0)


@pytest.mark.parametrize("layout", storage.LAYOUTS)
def test_sparse_files_round_trip_and_their_bytes_follow_the_formulas(classifier, tmp_path, layout):
    pruned = prune.apply_masks(classifier, prune.global_masks(prune.importance(classifier, "magnitude"), 0.9))
    size = storage.save_sparse(pruned, tmp_path / f"{layout}.safetensors", layout=layout)
    assert size == (tmp_path / f"{layout}.safetensors").stat().st_size
    state = storage.load_sparse_state_dict(tmp_path / f"{layout}.safetensors")
    assert all(torch.equal(state[k], v) for k, v in pruned.state_dict().items())
    w = pruned.bert.encoder.layer[2].output.dense.weight
    parts = storage.csr_tensors(w) if layout == "csr" else storage.bitmask_tensors(w)
    formula = storage.csr_bytes if layout == "csr" else storage.bitmask_bytes
    assert sum(t.numel() * t.element_size() for t in parts.values()) == formula(*w.shape, int((w != 0).sum()))
    dense = models.sentiment_classifier(smoke=True, progress=False)
    from toolkit import measure

    assert size < measure.bytes_on_disk(dense, tmp_path / "dense.safetensors")
    with pytest.raises(ValueError, match="layout must be one of csr, bitmask"):
        storage.save_sparse(pruned, tmp_path / "x.safetensors", layout="coo")
    assert not list(tmp_path.glob(".*tmp*")), "written atomically, no temporary file left"


def test_a_corrupted_sparse_file_is_refused(classifier, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    pruned = prune.apply_masks(classifier, prune.global_masks(prune.importance(classifier, "magnitude"), 0.5))
    path = tmp_path / "sparse.safetensors"
    storage.save_sparse(pruned, path, layout="bitmask")
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["classifier.bias"] = tensors["classifier.bias"] + 1
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(artifacts.IntegrityError, match="tensor contents do not match the sha256"):
        storage.load_sparse_state_dict(path)


def test_sparse_vs_dense_times_both_and_checks_arguments():
    w = prune.speed.random_sparse(64, 32, 0.75)
    assert int((w == 0).sum()) == round(0.75 * 64 * 32)
    timing = measure.sparse_vs_dense(w, tokens=16, warmup=1, repeats=3)
    assert timing["dense_ms"] > 0 and timing["sparse_ms"] > 0 and timing["threads"] >= 1
    with pytest.raises(ValueError, match="tokens must be a positive integer"):
        measure.sparse_vs_dense(w, tokens=0)


def test_row_masks_prune_every_output_row_equally():
    scores = {"a": torch.rand(6, 10, generator=torch.Generator().manual_seed(3))}
    mask = prune.row_masks(scores, 0.3)["a"]
    assert torch.equal(mask.sum(dim=1), torch.full((6,), 7.0))  # 10 - round(0.3 * 10) kept in every row
    for row, kept in zip(scores["a"], mask):
        assert row[kept == 0].max() <= row[kept == 1].min()  # the lowest scores of each row are the ones removed
    with pytest.raises(ValueError, match="sparsity must be a number in"):
        prune.row_masks(scores, 1.0)


@pytest.mark.parametrize("layout", storage.LAYOUTS)
def test_sparse_files_with_int8_values_store_one_byte_per_kept_weight(classifier, tmp_path, layout):
    # hand-worked: row (0.5, 0, -1.27): scale 1.27 / 127 = 0.01, codes (50, 0, -127)
    codes, scales = storage.int8_rows(torch.tensor([[0.5, 0.0, -1.27], [0.0, 0.0, 0.0]]))
    assert codes.tolist() == [[50, 0, -127], [0, 0, 0]] and scales[0].item() == pytest.approx(0.01)
    pruned = prune.apply_masks(classifier, prune.global_masks(prune.importance(classifier, "magnitude"), 0.9))
    fp32_size = storage.save_sparse(pruned, tmp_path / "fp32.safetensors", layout=layout)
    int8_size = storage.save_sparse(pruned, tmp_path / "int8.safetensors", layout=layout, value_bits=8)
    state = storage.load_sparse_state_dict(tmp_path / "int8.safetensors")
    name = "bert.encoder.layer.2.output.dense.weight"
    w = pruned.state_dict()[name]
    step = w.abs().amax(dim=1, keepdim=True) / 127  # (rows, 1): the rounding error is at most half a step per row
    assert torch.all((state[name] - w).abs() <= step / 2 + 1e-7)
    assert torch.all(state[name][w == 0] == 0), "a removed weight stays exactly zero"
    nnz = sum(int((pruned.get_submodule(n).weight != 0).sum()) for n in prune.prunable_modules(pruned))
    assert fp32_size - int8_size > 0.95 * 3 * nnz, "3 bytes saved per kept weight, less the row scales"
    with pytest.raises(ValueError, match="value_bits must be one of"):
        storage.save_sparse(pruned, tmp_path / "x.safetensors", value_bits=4)

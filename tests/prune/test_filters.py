"""Residual-aware convolution filter pruning (toolkit.prune.filters) and the digits helpers (toolkit.workbook.vision)."""

import copy

import pytest
import torch

from toolkit.workbook import vision
from toolkit.prune import filters


@pytest.fixture(scope="module")
def resnet():
    model = vision.digits_resnet()
    # random BatchNorm statistics, so that a wrong channel in a norm would change the output
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def test_groups_follow_the_residual_streams(resnet):
    groups = {g.name: g for g in filters.channel_groups(resnet)}
    assert list(groups) == ["stem", "stage0.block0.inner", "stage0.block1.inner", "stage0",
                            "stage1.block0.inner", "stage1.block1.inner", "stage1"]
    stage0 = groups["stage0"]
    # every block of stage 0 adds into the same stream: the projection and both second convolutions write it
    assert stage0.writers == ("resnet.encoder.stages.0.layers.0.shortcut.convolution",
                              "resnet.encoder.stages.0.layers.0.layer.1.convolution",
                              "resnet.encoder.stages.0.layers.1.layer.1.convolution")
    assert "resnet.encoder.stages.1.layers.0.shortcut.convolution" in stage0.readers
    assert groups["stage1"].readers[-1] == "classifier.1" and stage0.residual and not groups["stem"].residual


def test_identity_shortcut_joins_stem_and_stage():
    model = vision.digits_resnet(hidden_sizes=(16, 32), embedding_size=16)  # stage 0 keeps the stem's width
    names = [g.name for g in filters.channel_groups(model)]
    assert "stage0" not in names  # the stem's channels flow through stage 0 unchanged: one group
    stem = next(g for g in filters.channel_groups(model) if g.name == "stem")
    assert "resnet.encoder.stages.0.layers.1.layer.1.convolution" in stem.writers
    pruned = filters.prune_filters(model, 0.5)
    assert pruned(pixel_values=torch.rand(2, 1, 32, 32)).logits.shape == (2, 10)


def _zero_removed_inputs(model, kept):
    """The unpruned model in which no reader sees the removed channels (the pruned model's equivalent)."""
    reference = copy.deepcopy(model)
    for group in filters.channel_groups(reference):
        width = reference.get_submodule(group.writers[0]).out_channels
        removed = sorted(set(range(width)) - set(kept[group.name].tolist()))
        for reader in group.readers:
            reference.get_submodule(reader).weight.data[:, removed] = 0
    return reference


def test_pruned_network_equals_unpruned_with_removed_channels_unread(resnet):
    scores = filters.l1_scores(resnet)
    kept = {name: filters.kept_channels(s, 0.5) for name, s in scores.items()}
    pruned = filters.prune_filters_(copy.deepcopy(resnet), kept)
    reference = _zero_removed_inputs(resnet, kept)
    images = torch.rand(8, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(pruned(pixel_values=images).logits, reference(pixel_values=images).logits,
                                   rtol=1e-4, atol=1e-5)
    for group in filters.channel_groups(pruned):  # shapes agree everywhere
        for writer in group.writers:
            conv = pruned.get_submodule(writer)
            assert conv.weight.shape[0] == conv.out_channels == len(kept[group.name])
            assert pruned.get_submodule(writer.rsplit(".", 1)[0] + ".normalization").running_var.numel() == len(kept[group.name])
        for reader in group.readers:
            assert pruned.get_submodule(reader).weight.shape[1] == len(kept[group.name])


def test_half_the_channels_removes_most_conv_weights_and_leaves_the_original_alone(resnet):
    before = filters.conv_parameters(resnet)
    state = {k: v.clone() for k, v in resnet.state_dict().items()}
    pruned = filters.prune_filters(resnet, 0.5)
    # a 3x3 convolution between two halved groups keeps a quarter of its weights
    assert filters.conv_parameters(pruned) <= 0.3 * before
    assert all(torch.equal(v, resnet.state_dict()[k]) for k, v in state.items())
    partial = filters.prune_filters(resnet, {"stage1": 0.25})
    assert partial.classifier[1].in_features == 16 and partial.resnet.encoder.stages[0].layers[0].layer[0].convolution.out_channels == 32


def test_kept_channels_are_the_highest_scores():
    scores = torch.tensor([0.3, 5.0, 0.1, 2.0, 4.0])
    assert filters.kept_channels(scores, 0.6).tolist() == [1, 3, 4]
    assert filters.kept_channels(scores, 0.01).tolist() == [1]  # at least one channel stays
    assert filters.kept_channels(scores, 1.0).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, True, "half"])
def test_bad_keep_fraction_is_a_clear_error(resnet, keep):
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\]"):
        filters.prune_filters(resnet, keep)


def test_bad_group_names_and_indices_are_clear_errors(resnet):
    with pytest.raises(ValueError, match=r"unknown channel group\(s\) \['stage7'\]; accepted: stem"):
        filters.prune_filters(resnet, {"stage7": 0.5})
    with pytest.raises(ValueError, match=r"kept channels of group 'stem' must be .* \[0, 15\]"):
        filters.prune_filters_(copy.deepcopy(resnet), {"stem": torch.tensor([3, 16])})
    with pytest.raises(ValueError, match="ResNetForImageClassification with layer_type='basic'"):
        filters.channel_groups(torch.nn.Linear(2, 2))


def test_digits_splits_are_stratified_and_disjoint():
    splits = vision.digits_splits()
    assert splits.train_images.shape[1:] == (1, 32, 32) and len(splits.test_labels) == 360
    assert torch.bincount(splits.test_labels).min() >= 35  # every digit is in the test split
    assert 0 <= float(splits.train_images.min()) and float(splits.train_images.max()) <= 1
    with pytest.raises(ValueError, match="test_fraction"):
        vision.digits_splits(test_fraction=1.0)

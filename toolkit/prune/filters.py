"""Convolution filter pruning (L1 norms, Li et al. 2017) that respects residual connections.

Li et al. pruned only the first convolution of each residual block and left the residual stream
alone; pruning the stream as one coupled group, as here, is the practice of DepGraph (Fang et al.
2023, the Torch-Pruning library).

A convolution's *filter* c is its weight slice W[c] (in_channels, k, k): it produces output
channel c. Removing filter c removes that channel, so three things must shrink together:

- the filter W[c] and the channel's BatchNorm entries (weight, bias, running mean and variance);
- input slice c, W'[:, c], of every layer that reads the channel (the next convolution, or the
  classifier after global pooling).

Residual connections couple channels: in a ResNet stage every block *adds* its output to the
same residual stream, ``x + F(x)``, so channel c of the stream is written by the last convolution
of every block (and by the projection shortcut) and read by every later block. Those channels
can only be removed together, in every layer of the stage: they form one **channel group**.
Channels inside a block (between its first and second convolution) touch nothing else and are
a group of their own.

The L1 criterion scores channel c of a group by the filters that write it:

    s_c = Σ_{writers W} ||W[c]||_1

and keeps the highest-scoring channels. Every convolution here is followed by BatchNorm, which rescales
each channel by γ / σ, so a filter's L1 norm does not measure the channel's output: BatchNorm's |γ|
(Network Slimming, Liu et al. 2017) or |γ| / σ · ||W[c]||_1 are the usual scores in BatchNorm networks.
The L1 norm is kept here because it is the article's criterion and the simplest. This module knows the layout of ``transformers``'
``ResNetForImageClassification`` with basic blocks; ``prune_filters`` returns a pruned copy,
``prune_filters_`` changes the model it is given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together, with the layers that write and read them (module names)."""

    name: str
    writers: tuple[str, ...]  # convolutions whose output channels these are (each followed by a BatchNorm)
    readers: tuple[str, ...]  # convolutions or the classifier's linear layer whose input channels these are
    residual: bool  # True for a stage's residual stream (several blocks add into it)


def _resnet(model: nn.Module):
    resnet = getattr(model, "resnet", None)
    stages = getattr(getattr(resnet, "encoder", None), "stages", None)
    if stages is None or getattr(model.config, "layer_type", None) != "basic":
        raise ValueError(
            "model must be a transformers ResNetForImageClassification with layer_type='basic' "
            f"(e.g. toolkit.workbook.vision.digits_resnet()); got {type(model).__name__}"
        )
    return resnet


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every group of channels of a basic-block ResNet, in the order the image meets them.

    Stem and stage streams are joined into one group where a block's shortcut is the identity
    (the stream flows through unchanged); a projection shortcut (1x1 convolution) starts a new one.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    _resnet(model)
    groups: list[ChannelGroup] = []
    stream = {"name": "stem", "writers": ["resnet.embedder.embedder.convolution"], "readers": [], "residual": False}
    for s, stage in enumerate(model.resnet.encoder.stages):
        for b, block in enumerate(stage.layers):
            prefix = f"resnet.encoder.stages.{s}.layers.{b}"
            stream["readers"].append(f"{prefix}.layer.0.convolution")
            if not isinstance(block.shortcut, nn.Identity):  # a projection: the stream changes width here
                stream["readers"].append(f"{prefix}.shortcut.convolution")
                groups.append(ChannelGroup(stream["name"], tuple(stream["writers"]), tuple(stream["readers"]), stream["residual"]))
                stream = {"name": f"stage{s}", "writers": [f"{prefix}.shortcut.convolution"], "readers": [], "residual": True}
            groups.append(ChannelGroup(f"stage{s}.block{b}.inner", (f"{prefix}.layer.0.convolution",),
                                       (f"{prefix}.layer.1.convolution",), residual=False))
            stream["writers"].append(f"{prefix}.layer.1.convolution")
            stream["residual"] = True
    stream["readers"].append("classifier.1")  # after global average pooling and flattening
    groups.append(ChannelGroup(stream["name"], tuple(stream["writers"]), tuple(stream["readers"]), stream["residual"]))
    return groups


def _norm_of(conv_name: str) -> str:
    """The BatchNorm that follows a convolution in the transformers ResNet layout."""
    return conv_name.rsplit(".", 1)[0] + ".normalization"


def l1_scores(model: nn.Module, groups: list[ChannelGroup] | None = None) -> dict[str, torch.Tensor]:
    """s_c = Σ over the group's writers of ||W[c]||_1, one tensor (channels,) per group.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    groups = channel_groups(model) if groups is None else groups
    return {
        g.name: sum(model.get_submodule(w).weight.detach().abs().sum(dim=(1, 2, 3)) for w in g.writers)  # (channels,)
        for g in groups
    }


def kept_channels(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Sorted indices of the ceil(keep * channels) highest scores (at least one channel stays).

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1]; got {keep!r}")
    k = max(1, math.ceil(keep * scores.numel() - 1e-9))
    return scores.topk(k).indices.sort().values


def conv_parameters(model: nn.Module) -> int:
    """Weights of all convolutions (the quantity filter pruning reduces).

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def _cut(module: nn.Module, name: str, dim: int, kept: torch.Tensor) -> None:
    """Keep only ``kept`` along ``dim`` of ``module.<name>`` (a parameter or a buffer)."""
    tensor = getattr(module, name)
    if tensor is None:
        return
    cut = tensor.detach().index_select(dim, kept.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(cut, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, cut)


def prune_filters_(model: nn.Module, kept: Mapping[str, torch.Tensor]) -> nn.Module:
    """Keep only the channels ``kept[group name]`` of each named group, in place; returns ``model``."""
    groups = {g.name: g for g in channel_groups(model)}
    unknown = sorted(set(kept) - set(groups))
    if unknown:
        raise ValueError(f"unknown channel group(s) {unknown}; accepted: {', '.join(groups)}")
    for name, indices in kept.items():
        group = groups[name]
        width = model.get_submodule(group.writers[0]).out_channels
        indices = torch.as_tensor(indices, dtype=torch.long).unique()  # sorted, no repeats
        if indices.numel() == 0 or indices.min() < 0 or indices.max() >= width:
            raise ValueError(f"kept channels of group {name!r} must be a non-empty set of indices in [0, {width - 1}]")
        for writer in group.writers:
            conv, norm = model.get_submodule(writer), model.get_submodule(_norm_of(writer))
            _cut(conv, "weight", 0, indices)  # (out, in, k, k) -> (kept, in, k, k)
            _cut(conv, "bias", 0, indices)
            conv.out_channels = len(indices)
            for attribute in ("weight", "bias", "running_mean", "running_var"):
                _cut(norm, attribute, 0, indices)
            norm.num_features = len(indices)
        for reader in group.readers:
            layer = model.get_submodule(reader)
            _cut(layer, "weight", 1, indices)  # conv (out, in, k, k) or linear (out, in): input channels
            if isinstance(layer, nn.Conv2d):
                layer.in_channels = len(indices)
            else:
                layer.in_features = len(indices)
    return model


def prune_filters(model: nn.Module, keep: float | Mapping[str, float], scores: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``model`` keeping the best ``keep`` fraction of every channel group (or per group name).

    ``scores`` defaults to ``l1_scores(model)``. Groups missing from a ``keep`` mapping are left whole.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    groups = [g.name for g in channel_groups(model)]
    fractions = {name: keep for name in groups} if not isinstance(keep, Mapping) else dict(keep)
    unknown = sorted(set(fractions) - set(groups))
    if unknown:
        raise ValueError(f"unknown channel group(s) {unknown}; accepted: {', '.join(groups)}")
    scores = l1_scores(model) if scores is None else scores
    kept = {name: kept_channels(scores[name], fraction) for name, fraction in fractions.items()}
    return prune_filters_(copy.deepcopy(model), kept)

"""A small image task for convolution examples: scikit-learn's bundled digits and a tiny ResNet.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships 1,797 greyscale 8x8 images of the
digits 0-9 (values 0-16), and the network is ``transformers.ResNetForImageClassification``
built from a ``ResNetConfig`` with random weights, then trained here in a few seconds.

The 8x8 images are scaled to [0, 1] and enlarged to 32x32 (bilinear), so the ResNet's stem
(7x7 convolution with stride 2, then 3x3 max pooling with stride 2) still leaves an 8x8 map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toolkit.layers import eval_mode
from toolkit.runtime import check_int

IMAGE_SIZE = 32


@dataclass(frozen=True)
class ImageSplits:
    """Stratified train / test tensors: images (n, 1, 32, 32) in [0, 1], labels (n,) in 0..9.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def digits_splits(test_fraction: float = 0.2, seed: int = 0) -> ImageSplits:
    """scikit-learn's digits, split stratified by label (default 1,437 train / 360 test images).

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)  # (1797,)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=test_fraction, random_state=seed, stratify=labels.numpy()
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return ImageSplits(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


def digits_resnet(hidden_sizes=(32, 64), depths=(2, 2), embedding_size: int = 16, seed: int = 0) -> torch.nn.Module:
    """A small ``ResNetForImageClassification`` for 1-channel 32x32 digits, randomly initialised.

    Basic blocks (two 3x3 convolutions and a residual connection); every stage after the first
    halves the map. With the defaults: 16 stem channels, stages of 32 and 64 channels, two
    blocks each, about 0.2 M parameters.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=1, embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
        layer_type="basic", hidden_act="relu", downsample_in_first_stage=False, num_labels=10,
    )
    torch.manual_seed(seed)
    return ResNetForImageClassification(config).eval()


def train_images_(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 10,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Train ``model`` in place with AdamW and a cosine learning-rate schedule; return the seconds taken.

    Per step: loss = cross_entropy(model(x).logits, y) on a shuffled batch of ``batch_size`` images.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    check_int("epochs", epochs)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * -(-len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for first in range(0, len(labels), batch_size):
            chosen = order[first : first + batch_size]
            loss = F.cross_entropy(model(pixel_values=images[chosen]).logits, labels[chosen])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - start


@torch.inference_mode()
def image_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Share of ``images`` whose highest logit is the right label (model in eval mode).

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    with eval_mode(model):
        hits = sum(
            int((model(pixel_values=images[i : i + batch_size]).logits.argmax(-1) == labels[i : i + batch_size]).sum())
            for i in range(0, len(labels), batch_size)
        )
    return hits / len(labels)

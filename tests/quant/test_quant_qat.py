"""Straight-through gradients, LSQ, QAT layers, observer freezing and conversion."""

import math

import pytest
import torch

from toolkit import quant
from toolkit.quant import QuantSpec
from toolkit.quant.qat import QATLinear, convert, fake_quantize_ste, freeze_observers_, lsq_fake_quantize, prepare_qat


def test_ste_forward_equals_fake_quantize_and_backward_masks_clipped_values():
    x = torch.tensor([-3.0, -0.74, 0.0, 0.26, 0.9, 5.0], requires_grad=True)
    spec = QuantSpec(bits=3)  # codes [-4, 3]
    scale, zero = torch.tensor([0.25]), torch.tensor([0.0])
    y = fake_quantize_ste(x, spec, scale, zero)
    assert torch.equal(y.detach(), quant.fake_quantize(x.detach(), spec, 0.25, 0))
    y.sum().backward()
    # -3 / 0.25 = -12 and 5 / 0.25 = 20 are clipped: no gradient; 0.9 / 0.25 = 3.6 rounds to 4 > qmax: clipped too
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("axis", [0, 1])
def test_ste_gradients_match_pytorchs_fake_quantize(axis):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=g) * 3
    spec = QuantSpec(bits=4, granularity="channel", axis=axis)
    q = quant.quantize(x, spec)
    ours = x.clone().requires_grad_()
    theirs = x.clone().requires_grad_()
    upstream = torch.randn(6, 8, generator=g)
    (fake_quantize_ste(ours, spec, q.scale, q.zero_point) * upstream).sum().backward()
    clipped_scale = q.scale * 0.5  # make some values fall outside the range
    (torch.fake_quantize_per_channel_affine(theirs, q.scale, q.zero_point, axis, spec.qmin, spec.qmax) * upstream).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    (fake_quantize_ste(a, spec, clipped_scale, q.zero_point) * upstream).sum().backward()
    (torch.fake_quantize_per_channel_affine(b, clipped_scale, q.zero_point, axis, spec.qmin, spec.qmax) * upstream).sum().backward()
    assert torch.equal(a.grad, b.grad) and (a.grad == 0).any()


def test_lsq_scale_gradient_and_its_scaling():
    spec = QuantSpec(bits=3)  # qmax = 3
    x = torch.tensor([[0.3, -0.55, 2.0, -5.0]])
    scale = torch.tensor([0.5], requires_grad=True)
    lsq_fake_quantize(x, spec, scale).sum().backward()
    v = x / 0.5  # [0.6, -1.1, 4 -> clipped to 3, -10 -> clipped to -4]
    raw = (torch.round(v[0, 0]) - v[0, 0]) + (torch.round(v[0, 1]) - v[0, 1]) + 3 + (-4)
    g = 1 / math.sqrt(4 * 3)
    assert scale.grad.item() == pytest.approx(float(raw) * g, rel=1e-5)


def test_qat_linear_trains_its_float_master_weights():
    torch.manual_seed(0)
    layer = QATLinear(torch.nn.Linear(16, 4), QuantSpec(bits=4, granularity="channel"))
    x, target = torch.randn(64, 16), torch.randn(64, 4)
    before = layer.weight.detach().clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(layer(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert layer.weight.dtype == torch.float32 and not torch.equal(layer.weight, before)


def test_observers_update_while_training_and_stop_when_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    qat = prepare_qat(model, QuantSpec(bits=8, granularity="channel"), input_spec=QuantSpec(bits=8, symmetric=False), skip=())
    layer = qat[0]
    qat.train()
    qat(torch.randn(4, 8))
    first = layer.input_observer.range()[1].clone()
    qat(torch.randn(4, 8) * 10)
    assert layer.input_observer.range()[1] > first
    assert freeze_observers_(qat) == 1
    settled = layer.input_observer.range()[1].clone()
    qat(torch.randn(4, 8) * 100)
    assert torch.equal(layer.input_observer.range()[1], settled)


@pytest.mark.parametrize("lsq", [False, True])
def test_convert_gives_the_same_outputs_from_packed_integers(lsq):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    spec = QuantSpec(bits=4, granularity="group", group_size=16)
    qat = prepare_qat(model, spec, input_spec=QuantSpec(bits=8, symmetric=False), lsq=lsq, skip=())
    qat.train()
    optimizer = torch.optim.Adam(qat.parameters(), lr=1e-2)
    for _ in range(5):
        loss = qat(torch.randn(8, 32)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    qat.eval()
    integer = convert(qat)
    x = torch.randn(10, 32)
    with torch.no_grad():
        assert torch.allclose(qat(x), integer(x), atol=1e-5)
    assert isinstance(integer[0], quant.modules.QuantLinear) and integer[0].weight_q.codes.dtype == torch.uint8


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(TypeError, match="wraps nn.Linear"):
        QATLinear(torch.nn.Conv1d(2, 2, 1), QuantSpec(bits=4))
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        QuantSpec(bits=12)
    with pytest.raises(ValueError, match="QAT weights need an integer spec of 2-8 bits"):
        QATLinear(torch.nn.Linear(2, 2), QuantSpec(bits=1))
    with pytest.raises(ValueError, match=r"module names \['fc9'\] are not linear layers \(nn.Linear or Conv1D\)"):
        prepare_qat(torch.nn.Sequential(torch.nn.Linear(2, 2)), QuantSpec(bits=4), modules=["fc9"])
    with pytest.raises(ValueError, match="LSQ here learns symmetric"):
        lsq_fake_quantize(torch.randn(4), QuantSpec(bits=4, symmetric=False), torch.ones(1))
    with pytest.raises(ValueError, match="no QATLinear layers"):
        convert(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_prepare_qat_copies_the_model_and_leaves_the_head_alone(tokenizer):
    from toolkit import models

    classifier = models.sentiment_classifier(smoke=True, progress=False)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    qat = prepare_qat(classifier, QuantSpec(bits=4, granularity="channel"))
    assert all(isinstance(m, torch.nn.Linear) and not isinstance(m, QATLinear) for n, m in classifier.named_modules() if n.endswith("dense"))
    assert isinstance(qat.bert.encoder.layer[0].intermediate.dense, QATLinear)
    assert type(qat.classifier) is torch.nn.Linear
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())


def test_a_trained_qat_classifier_survives_conversion_and_the_file_round_trip(tokenizer, splits, tmp_path):
    from toolkit import measure, models
    from toolkit.train import FineTuneConfig, fine_tune_

    qat = prepare_qat(models.sentiment_classifier(smoke=True, progress=False), QuantSpec(bits=2, granularity="channel"),
                      input_spec=QuantSpec(bits=8, symmetric=False))
    steps = []
    fine_tune_(qat, tokenizer, splits.train, FineTuneConfig(epochs=1, train_limit=64, learning_rate=1e-4), progress=False,
               on_step=lambda step, learning_rate: (steps.append(step), freeze_observers_(qat) if step == 1 else None))
    assert steps == [1, 2]
    assert all(m.observer_frozen for m in qat.modules() if isinstance(m, QATLinear))
    path = tmp_path / "qat.safetensors"
    quant.save_quantized(convert(qat), path)
    reloaded = quant.load_quantized(path)
    test = splits.test[:48]
    fake, real = measure.predict(qat, tokenizer, test), measure.predict(reloaded, tokenizer, test)
    assert torch.allclose(fake, real, atol=1e-4)

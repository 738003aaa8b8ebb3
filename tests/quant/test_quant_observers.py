import pytest
import torch

from toolkit import quant
from toolkit.quant import QuantSpec
from toolkit.quant.observers import OBSERVERS, MinMaxObserver, make_observer


def batches_with_outlier(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(8, 16, 32, generator=g) for _ in range(n)]  # (batch, seq, hidden)
    out[1][0, 0, 3] = 40.0  # one huge activation in channel 3
    return out


def test_minmax_covers_everything_seen_per_tensor_and_per_channel():
    data = batches_with_outlier()
    whole = torch.cat(data)
    obs = MinMaxObserver(QuantSpec())
    per_channel = MinMaxObserver(QuantSpec(granularity="channel", axis=-1))
    for x in data:
        obs.observe(x)
        per_channel.observe(x)
    lo, hi = obs.range()
    assert float(lo) == float(whole.min()) and float(hi) == 40.0
    lo_c, hi_c = per_channel.range()
    assert lo_c.shape == (32,) and torch.equal(hi_c, whole.amax(dim=(0, 1)))


@pytest.mark.parametrize("name", ["percentile", "mse", "histogram"])
def test_clipping_observers_ignore_the_outlier_and_lower_the_error(name):
    spec = QuantSpec(bits=8)
    data = batches_with_outlier()
    minmax, clipping = MinMaxObserver(spec), make_observer(name, spec)
    for x in data:
        minmax.observe(x)
        clipping.observe(x)
    assert float(clipping.range()[1]) < 40.0
    x = torch.cat(data)
    bulk = x.abs() < 10  # every value but the outlier: clipping buys them a finer grid
    err = {}
    for label, obs in (("minmax", minmax), (name, clipping)):
        scale, zero_point = obs.qparams()
        err[label] = quant.mse(x[bulk], quant.fake_quantize(x, spec, scale, zero_point)[bulk])
    assert err[name] < err["minmax"], err


def test_moving_average_follows_batches_slowly():
    obs = make_observer("moving_average", QuantSpec(), averaging_constant=0.5)
    obs.observe(torch.tensor([-1.0, 1.0]))
    obs.observe(torch.tensor([-3.0, 3.0]))
    lo, hi = obs.range()
    assert (float(lo), float(hi)) == (-2.0, 2.0)


def test_observers_refuse_bad_use():
    with pytest.raises(ValueError, match="observer 'max' is not known; accepted: minmax"):
        make_observer("max", QuantSpec())
    with pytest.raises(ValueError, match="granularity"):
        MinMaxObserver(QuantSpec(granularity="group", group_size=4))
    with pytest.raises(RuntimeError, match="observed nothing"):
        MinMaxObserver(QuantSpec()).range()
    with pytest.raises(ValueError, match="percentile"):
        make_observer("percentile", QuantSpec(), percentile=20)
    obs = MinMaxObserver(QuantSpec(granularity="channel", axis=-1))
    obs.observe(torch.randn(2, 4))
    with pytest.raises(ValueError, match="same channels"):
        obs.observe(torch.randn(2, 5))


def test_every_observer_gives_valid_qparams():
    for name in OBSERVERS:
        for spec in (QuantSpec(bits=4, symmetric=False), QuantSpec(bits=8, granularity="channel", axis=-1)):
            obs = make_observer(name, spec)
            for x in batches_with_outlier(2):
                obs.observe(x)
            scale, zero_point = obs.qparams()
            assert bool((scale > 0).all()) and bool(((zero_point >= spec.qmin) & (zero_point <= spec.qmax)).all())


def test_mse_observer_minimises_the_total_error_it_is_named_after():
    spec = QuantSpec(bits=4)
    x = torch.cat(batches_with_outlier())
    minmax, mse = MinMaxObserver(spec), make_observer("mse", spec, max_samples=2**20)
    minmax.observe(x)
    mse.observe(x)
    errors = [quant.mse(x, quant.fake_quantize(x, spec, *obs.qparams())) for obs in (minmax, mse)]
    assert errors[1] < errors[0], errors

"""The counter-based random source (dltrain/nn/noise.py) and the layers drawing from it: its statistics
(Bernoulli rates within binomial bounds, uniform and normal moments, no correlation between neighbouring
elements, successive counters or keys), that it is a pure function of (key, counter, index) that vmap
evaluates member by member, and the layers' behaviour: fresh masks every step, whole channels, identity in
eval, MC-dropout passes that differ, the same keys for the same seed."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from dltrain.analysis.ensemble import MCDropout
from dltrain.config import compose_config
from dltrain.models import build_model
from dltrain.nn import noise
from dltrain.nn.regularizers import DropConnectLinear, Dropout, DropPath, GaussianNoise

N = 200_000


def seeds(*pairs):
    return noise.stream(torch.tensor([k for k, _ in pairs]), torch.tensor([c for _, c in pairs]))


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_the_hash_on_tensors_is_splitmix64_as_on_python_ints():
    values = [0, 1, 2, 12345, -7, 2**62, -(2**63)]
    assert [int(v) for v in noise.mix64(torch.tensor(values))] == [noise.mix64_int(v) for v in values]
    # SplitMix64's first output from seed 0 is the published 0xE220A8397B1DCDAF
    assert noise.mix64_int(noise.GAMMA) & (2**64 - 1) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_keep_masks_have_the_bernoulli_rate_within_binomial_bounds(p):
    keep = noise.keep_mask(seeds((3, 1))[0], (N,), torch.tensor(p))
    rate = 1 - keep.double().mean().item()
    assert abs(rate - p) <= 4.5 * math.sqrt(p * (1 - p) / N), rate


def test_uniform_has_the_moments_of_u01_and_stays_in_0_1():
    u = noise.uniform(seeds((5, 2))[0], (N,), torch.float64)
    assert 0 <= u.min() and u.max() < 1
    se = 4.5 / math.sqrt(N)
    assert abs(u.mean().item() - 0.5) < se * math.sqrt(1 / 12)
    assert abs(u.var().item() - 1 / 12) < se * math.sqrt(1 / 180)   # Var of (U−½)² is 1/180
    counts = torch.bincount((u * 16).long(), minlength=16).double()   # χ² over 16 bins, 15 d.o.f.
    chi2 = ((counts - N / 16) ** 2 / (N / 16)).sum().item()
    assert chi2 < 45                                                  # p ≈ 1e-4


def test_normal_has_mean_0_variance_1_and_gaussian_tails():
    z = noise.normal(seeds((7, 3))[0], (N,), torch.float64)
    assert abs(z.mean().item()) < 4.5 / math.sqrt(N)
    assert abs(z.var().item() - 1) < 4.5 * math.sqrt(2 / N)
    assert abs((z.abs() > 1.96).double().mean().item() - 0.05) < 4.5 * math.sqrt(0.05 * 0.95 / N)
    assert abs((z ** 4).mean().item() - 3) < 0.1                      # kurtosis of a normal


def test_no_correlation_between_neighbours_counters_or_keys():
    bound = 4.5 / math.sqrt(N)
    u = noise.uniform(seeds((11, 1), (11, 2), (12, 1)), (N,), torch.float64)
    assert abs(correlation(u[0, :-1], u[0, 1:])) < bound              # neighbouring elements
    assert abs(correlation(u[0], u[1])) < bound                       # successive counters
    assert abs(correlation(u[0], u[2])) < bound                       # different keys
    z = noise.normal(seeds((11, 1)), (N,), torch.float64)[0]
    half = (N + 1) // 2                                               # the two values of each Box–Muller pair
    assert abs(correlation(z[:half], z[half:2 * half])) < bound
    assert abs(correlation(z[:half] ** 2, z[half:2 * half] ** 2)) < bound


def test_the_numbers_are_a_function_of_key_counter_and_index_also_under_vmap():
    keys, counters = torch.tensor([1, 2, 3]), torch.tensor([5, 5, 9])
    batched = noise.uniform(noise.stream(keys, counters), (4, 6))
    one_by_one = torch.stack([noise.uniform(noise.stream(k, c), (4, 6)) for k, c in zip(keys, counters)])
    vmapped = vmap(lambda k, c: noise.uniform(noise.stream(k, c), (4, 6)))(keys, counters)
    assert torch.equal(batched, one_by_one) and torch.equal(vmapped, one_by_one)
    assert torch.equal(noise.uniform(noise.stream(keys, counters), (4, 6)), batched)  # no hidden state


@pytest.mark.parametrize("make, shape", [(lambda: Dropout(0.5), (64, 32)), (lambda: DropPath(0.5), (64, 4, 3, 3)),
                                         (lambda: GaussianNoise(0.1), (64, 32))])
def test_a_layer_draws_fresh_numbers_every_training_pass_and_is_the_identity_in_eval(make, shape):
    layer, x = make(), torch.ones(shape)
    outs = [layer(x) for _ in range(3)]
    assert int(layer.calls) == 3
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    layer.eval()
    assert torch.equal(layer(x), x) and int(layer.calls) == 3         # eval: no draw, no count


def test_dropconnect_draws_a_fresh_weight_mask_every_pass():
    layer = DropConnectLinear(50, 4, 0.5)
    x = torch.randn(2, 50)
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_channel_dropout_drops_whole_channels_at_the_rate_and_scales_survivors():
    p, drop = 0.3, Dropout(0.3, channels=True)
    y = drop(torch.ones(500, 64, 3, 3))
    per_channel = y[:, :, :1, :1]
    assert torch.equal(y, per_channel.expand_as(y))                   # all or nothing per (sample, channel)
    assert per_channel.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    n = per_channel.numel()
    assert abs((per_channel == 0).double().mean().item() - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


def test_a_stacked_layer_gives_each_member_its_own_layers_numbers():
    """vmap over stacked buffers (a fused group): member m's output is what its own module gives, step by step,
    with its own rate and key, and its counter counts in its own slice."""
    def members():
        layers = [Dropout(p) for p in (0.1, 0.5, 0.8)]
        for seed, layer in enumerate(layers):
            noise.seed_modules(layer, seed)
        return layers

    stacked, alone = members(), members()
    params, buffers = stack_module_state(stacked)
    base = copy.deepcopy(stacked[0]).to("meta")
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None), randomness="error")
    x = torch.randn(64, 32)
    for _ in range(3):
        out = forward(params, buffers, x)
        for m, layer in enumerate(alone):
            assert torch.equal(out[m], layer(x))
    assert buffers["calls"].tolist() == [3, 3, 3]


def model(seed: int, *overrides):
    return build_model(compose_config(["data=synthetic", "model.width=16", "model.depth=2", f"seed={seed}",
                                       *overrides]))


def test_the_seed_sets_the_keys_without_moving_torchs_generator():
    torch.manual_seed(0)
    a = model(0, "regularizer=[dropout,dropconnect,input_noise]")
    state = torch.get_rng_state()
    torch.manual_seed(0)
    plain = model(0)
    assert torch.equal(torch.get_rng_state(), state)                  # the layers drew nothing
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in a.state_dict().items())  # same initial weights
    b, c = model(0, "regularizer=[dropout,dropconnect,input_noise]"), model(1, "regularizer=[dropout,dropconnect,input_noise]")
    keys = {name: [int(m.key) for m in (a_m, b_m, c_m)]
            for (name, a_m), b_m, c_m in zip(noise.stochastic_modules(a).items(), noise.stochastic_modules(b).values(),
                                             noise.stochastic_modules(c).values())}
    assert len(keys) == 5                                             # noise, 2 × DropConnect, 2 × dropout
    assert all(k[0] == k[1] != k[2] for k in keys.values())
    assert len({k[0] for k in keys.values()}) == 5                    # each layer its own stream
    assert "key" not in str(list(a.state_dict()))                     # the state_dict is unchanged


def test_mc_dropout_passes_differ_and_the_norms_stay_in_eval():
    net = model(0, "regularizer=dropout", "norm=batch")
    x = torch.randn(8, 1, 28, 28)
    mc = MCDropout(net, passes=2)
    mc.train()
    assert not torch.equal(net(x), net(x))                            # a fresh mask every pass
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d))
    first, second = mc(x), mc(x)
    assert not torch.equal(first, second) and torch.isfinite(first).all()


def test_the_counters_round_trip_through_a_checkpoint_dict():
    a, b = model(0, "regularizer=dropout"), model(0, "regularizer=dropout")
    x = torch.randn(4, 1, 28, 28)
    for _ in range(3):
        a(x)
    b.load_state_dict(a.state_dict())
    assert not torch.equal(a(x), b(x))                                # the weights alone do not continue a run
    noise.load_counters(b, noise.counters(a))
    assert torch.equal(a(x), b(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_the_same_numbers_as_the_cpu():
    s = seeds((3, 1), (4, 2))
    assert torch.equal(noise.keep_mask(s.cuda(), (1000,), torch.tensor(0.3).cuda()).cpu(),
                       noise.keep_mask(s, (1000,), torch.tensor(0.3)))
    assert torch.equal(noise.bits32(s.cuda(), 1001).cpu(), noise.bits32(s, 1001))
    torch.testing.assert_close(noise.normal(s.cuda(), (1001,), torch.float64).cpu(),
                               noise.normal(s, (1001,), torch.float64), rtol=1e-12, atol=1e-12)

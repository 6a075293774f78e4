"""Metric functions return batch sums that match a direct computation, and nll/mse/bce equal the loss of
the same name times N (so val/<name> = the loss on the validation set)."""
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dltrain.config import compose_config, config_dir
from dltrain.nn import metrics

# The batch of test_losses: z = [1,0,0], [0,2,0], [0,2,0]; y = 0, 2, 1.
Z = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 2, 0]])
Y = torch.tensor([0, 2, 1])


def test_nll_is_the_sum_of_minus_log_softmax_of_the_target():
    # (log(e+2) − 1) + log(e²+2) + (log(e²+2) − 2)
    expected = math.log(math.e + 2) - 1 + 2 * math.log(math.e**2 + 2) - 2
    assert metrics.nll(Z, Y).item() == pytest.approx(expected, rel=1e-6)


def test_mse_is_the_sum_over_samples_of_the_mean_over_classes():
    p = [[math.e / (math.e + 2), 1 / (math.e + 2), 1 / (math.e + 2)]] + \
        [[1 / (math.e**2 + 2), math.e**2 / (math.e**2 + 2), 1 / (math.e**2 + 2)]] * 2
    onehot = [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    expected = sum(sum((pk - yk) ** 2 for pk, yk in zip(pi, yi)) / 3 for pi, yi in zip(p, onehot))
    assert metrics.mse(Z, Y).item() == pytest.approx(expected, rel=1e-6)


def test_bce_is_the_sum_over_samples_of_the_mean_over_classes():
    softplus = lambda v: math.log1p(math.exp(v))  # −log(1 − σ(z)); −log σ(z) = softplus(z) − z
    onehot = [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    expected = sum(sum(softplus(zk) - yk * zk for zk, yk in zip(zi, yi)) / 3
                   for zi, yi in zip(Z.tolist(), onehot))
    assert metrics.bce(Z, Y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["nll", "mse", "bce"])
def test_metric_equals_its_loss_times_batch_size(name):
    torch.manual_seed(0)
    z, y = torch.randn(64, 10), torch.randint(0, 10, (64,))
    # the option file's label_smoothing interpolation, resolved at its off value
    loss = instantiate(OmegaConf.load(config_dir() / "loss" / f"{name}.yaml"), label_smoothing=0.0)
    assert getattr(metrics, name)(z, y).item() == pytest.approx(64 * loss(z, y).item(), rel=1e-5)


def test_top5_counts_targets_among_the_five_highest_scores():
    z = torch.arange(10.0).repeat(3, 1)          # scores 0..9: the top five are classes 5..9
    y = torch.tensor([9, 5, 4])                  # in, in (5th best), out (6th best)
    assert metrics.top5(z, y).item() == 2
    assert metrics.top5(Z, Y).item() == 3       # K = 3 ≤ 5: every target counts


def test_accuracy_counts_argmax_hits():
    assert metrics.accuracy(Z, Y).item() == 2   # argmax 0, 1, 1 against 0, 2, 1


def test_metric_sums_are_0d_tensors():
    for name in ("accuracy", "top5", "nll", "mse", "bce"):
        assert getattr(metrics, name)(Z, Y).dim() == 0, name


@pytest.mark.parametrize("overrides", [["metrics=[acc,mse,nll]"], ["metrics=[nll,mse,acc]"]])
def test_metrics_list_group_composes_every_named_metric(overrides):
    cfg = compose_config(overrides)
    assert set(cfg.metrics) == {"acc", "mse", "nll"}
    for name, fn in instantiate(cfg.metrics).items():
        assert torch.is_tensor(fn(Z, Y)), name


def test_every_metric_option_composes():
    cfg = compose_config(["metrics=[acc,nll,mse,bce,top5]"])
    assert set(cfg.metrics) == {"acc", "nll", "mse", "bce", "top5"}
    assert instantiate(cfg.metrics.top5)(Z, Y).item() == 3

"""The cost of dltrain's counter-based random layers (nn/noise.py) in an ordinary run, as ratios to torch's
generator-based equivalents measured in the same process, alternating the contenders round by round:

  dropout_ratio      a training step of the default MLP with regularizer=dropout, our Dropout / nn.Dropout
  input_noise_ratio  the same with regularizer=input_noise, our GaussianNoise / x + randn_like(x)·σ
  weight_noise_ratio the same with regularizer=weight_noise, our keyed noise / randn_like per weight

    python scripts/bench_noise.py [--rounds 15] [--steps 20] [--device cpu|cuda]

A step is forward, backward and the SGD update on a random batch of the configured size; ratio > 1 means ours
is slower. Prints one line per figure (median of the rounds, and the two medians in ms).
"""
from __future__ import annotations

import argparse
import copy
import statistics
from contextlib import contextmanager

import torch
from torch import nn

from bench import alternate, ratio, sync  # scripts/bench.py: the same pairing of rounds
from dltrain.config import compose_config
from dltrain.models import build_model
from dltrain.nn.regularizers import Dropout, GaussianNoise
from dltrain.nn.weight_noise import noisy_weights, restored, weight_keys
from dltrain.optim import split_parameters


class TorchNoise(nn.Module):
    def __init__(self, std):
        super().__init__()
        self.std = std

    def forward(self, x):
        return x + torch.randn_like(x) * self.std if self.training else x


def torch_twin(model: nn.Module) -> nn.Module:
    """The same model with torch's dropout and randn noise in place of ours."""
    twin = copy.deepcopy(model)
    for parent in twin.modules():
        for name, child in parent.named_children():
            if isinstance(child, Dropout):
                setattr(parent, name, nn.Dropout2d(child.p) if child.channels else nn.Dropout(child.p))
            elif isinstance(child, GaussianNoise):
                setattr(parent, name, TorchNoise(child.std))
    return twin


@contextmanager
def torch_weight_noise(weights, std):
    with restored(weights):
        with torch.no_grad():
            for w in weights:
                w.add_(torch.randn_like(w) * std)
        yield


def stepper(model, batch, device, weight_noise=None):
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    weights, _ = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    keys = weight_keys([names[id(w)] for w in weights], 0).to(device)
    counter = [0]

    def step():
        if weight_noise == "ours":
            context = noisy_weights(weights, 0.01, keys, counter[0])
        elif weight_noise == "torch":
            context = torch_weight_noise(weights, 0.01)
        else:
            context = torch.enable_grad()
        counter[0] += 1
        opt.zero_grad(set_to_none=True)
        with context:
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def compare(ours, theirs, rounds, steps, device):
    """(ours' time per step over torch's, median of paired rounds; each one's median ms per step), with
    bench.py's alternation (a warm-up each, the order reversed every other round)."""
    def run(step):
        def timed():
            for _ in range(steps):
                step()
            sync(device)
            return steps
        return timed

    rates = alternate({"ours": run(ours), "torch": run(theirs)}, rounds)  # steps per second
    return (ratio(rates, "torch", "ours"), 1e3 / statistics.median(rates["ours"]),
            1e3 / statistics.median(rates["torch"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")
    for figure, option, weight_noise in (("dropout_ratio", "regularizer=dropout", None),
                                         ("input_noise_ratio", "regularizer=input_noise", None),
                                         ("weight_noise_ratio", "regularizer=weight_noise", "weights")):
        cfg = compose_config([option])
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        twin = torch_twin(model).to(device).train()
        batch = int(cfg.data.batch_size)
        if weight_noise:
            ours, theirs = stepper(model, batch, device, "ours"), stepper(twin, batch, device, "torch")
        else:
            ours, theirs = stepper(model, batch, device), stepper(twin, batch, device)
        slower, a, b = compare(ours, theirs, args.rounds, args.steps, device)
        print(f"{figure:20s} {slower:.3f}   (ours {a:.3f} ms/step, torch's {b:.3f} ms/step; batch {batch}, {option})")


if __name__ == "__main__":
    main()

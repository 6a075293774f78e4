"""A counter-based random source: random numbers as a pure function of (key, counter, element index).

Why not torch's generators: a generator is state that a whole process shares. Under `vmap` (a fused sweep's
stacked model) every member draws from the one generator, so a member's dropout masks cannot be its own run's;
and a compiled step or a CUDA graph cannot advance it per call without care. Here a stochastic module holds
its key and a call counter as buffers (a stacked model holds one per member, like batch norm's statistics),
and the numbers are computed from them with integer tensor ops only: the same on the CPU and on CUDA, eager,
vmapped or compiled, and a run's masks depend only on its seed and on how many training passes it has made.

The generator is SplitMix64 (Steele, Lea & Flood 2014, the seeder of xoroshiro; passes BigCrush): element i of
the stream with 64-bit seed s is mix64(s + (i + 1)·γ), γ = 2^64/φ; a stream's seed s is itself output
`counter` of the SplitMix64 sequence whose state is the key. torch has no unsigned 64-bit arithmetic: int64 multiplication wraps modulo 2^64 as the
unsigned one does, and a logical right shift is the arithmetic one with the sign-extended bits masked off.
"""
from __future__ import annotations

import itertools
import math
import zlib

import torch
from torch import nn

_MASK64 = (1 << 64) - 1


def _signed(u: int) -> int:
    u &= _MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


GAMMA = _signed(0x9E3779B97F4A7C15)
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 words (torch's >> is arithmetic)."""
    return (x >> k).bitwise_and_((1 << (64 - k)) - 1)


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """mix64 in place: on the CPU a fresh 64-bit tensor per op (page faults for large ones) costs as much as
    the op itself."""
    for shift, multiplier in ((30, _M1), (27, _M2)):
        x.bitwise_xor_(_srl(x, shift)).mul_(multiplier)
    return x.bitwise_xor_(_srl(x, 31))


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijection of 64-bit words with full avalanche."""
    return _mix64_(x.clone())


def mix64_int(x: int) -> int:
    """mix64 on a Python int (keys are derived on the host, once per run)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(x ^ (x >> 31))


def derive_key(seed: int, name: str) -> int:
    """A run's key for one named random stream (a module's path, a weight's name): a function of the seed and
    the name only, so a run and its fused member get the same keys, and drawing them moves no generator."""
    return mix64_int(mix64_int(int(seed) * GAMMA + 1) ^ zlib.crc32(name.encode()))


def stream(key: torch.Tensor, counter: torch.Tensor | int) -> torch.Tensor:
    """The seed word of the stream (key, counter): output `counter` of SplitMix64 seeded with the key (keys are
    mixed words already, derive_key); any broadcastable int64 shapes, or a Python int counter. One mix64 of a
    scalar: on a GPU each of its ops is a kernel launch, per layer and step."""
    spread = _signed(counter * GAMMA) if isinstance(counter, int) else counter * GAMMA
    return _mix64_(key + spread)


def words(seed: torch.Tensor, n: int) -> torch.Tensor:
    """Elements 0..n-1 of the streams `seed` ([*] int64 words): [*, n] uniform 64-bit words."""
    index = torch.arange(1, n + 1, device=seed.device, dtype=torch.int64).mul_(GAMMA)
    return _mix64_(index + seed.unsqueeze(-1))


def _halves(seed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of ⌈n/2⌉ words of each stream: two uniform 32-bit integers per word."""
    w = words(seed, (n + 1) // 2)
    return _srl(w, 32), w & 0xFFFFFFFF


def bits32(seed: torch.Tensor, n: int) -> torch.Tensor:
    """[*, n] uniform integers in [0, 2^32): half a word each (the cost of the hash halves)."""
    high, low = _halves(seed, n)
    return torch.cat((high, low), dim=-1)[..., :n]


def uniform(seed: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """[*seed.shape, *shape] uniform in [0, 1), 32 bits of resolution."""
    shape = tuple(shape)
    u = bits32(seed, math.prod(shape)).to(dtype or torch.get_default_dtype()) * 2.0 ** -32
    return u.reshape(*seed.shape, *shape)


def keep_mask(seed: torch.Tensor, shape, p: torch.Tensor) -> torch.Tensor:
    """[*seed.shape, *shape] bools, True with probability 1 − p (p a float tensor broadcastable to seed):
    an integer comparison of 32 random bits with ⌊p·2^32⌋, exact whatever the model's dtype."""
    shape = tuple(shape)
    n = math.prod(shape)
    threshold = (p.double() * 2.0 ** 32).to(torch.int64).unsqueeze(-1)
    high, low = _halves(seed, n)  # compared before joining: bools are 1/8 of the bytes to copy
    return torch.cat((high >= threshold, low >= threshold), dim=-1)[..., :n].reshape(*seed.shape, *shape)


def normal(seed: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """[*seed.shape, *shape] standard normal (Box–Muller: both values of each pair, one word per pair)."""
    shape = tuple(shape)
    n = math.prod(shape)
    dtype = dtype or torch.get_default_dtype()
    high, low = _halves(seed, n)
    u1 = high.to(dtype).add_(0.5).mul_(2.0 ** -32)  # in (0, 1): log(u1) is finite
    theta = low.to(dtype).mul_(2.0 ** -32 * 2 * math.pi)
    r = u1.log_().mul_(-2.0).sqrt_()
    z = torch.cat((torch.cos(theta).mul_(r), theta.sin_().mul_(r)), dim=-1)[..., :n]
    return z.reshape(*seed.shape, *shape)


def fold(*values: int) -> int:
    """One counter from several (a step, its micro-batch, an evaluation of L-BFGS's closure)."""
    h = 0
    for v in values:
        h = mix64_int(h ^ (int(v) * GAMMA + 1))
    return h


# -- modules that draw from it --------------------------------------------------------------------------------
_instances = itertools.count()


class Stochastic:
    """Mixin of the modules that draw random numbers in training: a key and a call counter as non-persistent
    buffers (checkpoints' state_dicts are unchanged; `counters` saves the counts for a resume). `build_model`
    sets each module's key from the run's seed and the module's path (`seed_modules`); a module built on its
    own gets a key of its own from torch's seed and its place in the process's order of construction."""

    def init_stream(self) -> None:
        key = derive_key(torch.initial_seed(), f"instance.{next(_instances)}")
        self.register_buffer("key", torch.tensor(key, dtype=torch.int64), persistent=False)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64), persistent=False)

    def next_seed(self) -> torch.Tensor:
        """The stream of this training pass: the counter counts in place (per member under vmap)."""
        self.calls.add_(1)
        return stream(self.key, self.calls)


def stochastic_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Stochastic)}


@torch.no_grad()
def seed_modules(model: nn.Module, seed: int) -> None:
    """Each stochastic module's key from (seed, its path); counters at 0."""
    for name, m in stochastic_modules(model).items():
        m.key.fill_(derive_key(seed, f"module.{name}"))
        m.calls.zero_()


def counters(model: nn.Module) -> dict[str, int]:
    """How many training passes each stochastic module has made (for the checkpoint: a resume continues the
    masks where the straight run would be)."""
    return {name: int(m.calls) for name, m in stochastic_modules(model).items()}


@torch.no_grad()
def load_counters(model: nn.Module, saved: dict[str, int]) -> None:
    for name, m in stochastic_modules(model).items():
        if name in saved:
            m.calls.fill_(int(saved[name]))

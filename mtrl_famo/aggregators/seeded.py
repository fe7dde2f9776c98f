"""Random streams seeded per call, for the aggregators that draw (PCGrad's orders, RLW's weights).

Call ``n`` seeds a generator on the device where the draw is needed with
``splitmix64(seed, n)``: the draws are a function of ``(seed, n, device type)`` alone, the
checkpointed state is two integers, and counting calls on the host costs no sync.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


class CallSeeded:
    """Mixin: the ``seed`` and ``calls`` of a per-call seeded stream, and its next generator.

    :param seed: seed of the stream (an integer).
    """

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.calls = 0  # generators handed out so far
        self._generators: dict[torch.device, torch.Generator] = {}

    def next_generator(self, device: torch.device | str) -> torch.Generator:
        """A generator on ``device`` seeded for call ``calls`` (one per device, reseeded); counts the call."""
        device = torch.device(device)
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        generator.manual_seed(splitmix64(self.seed, self.calls))
        self.calls += 1
        return generator


def splitmix64(seed: int, n: int) -> int:
    """A well-mixed 63-bit generator seed for call ``n`` of ``seed`` (SplitMix64's finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (n + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1

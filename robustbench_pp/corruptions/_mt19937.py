"""torch's CPU generator stream drawn in compiled code: the same numbers, the same state after.

A CPU ``torch.Generator`` is a Mersenne Twister (mt19937) whose whole state ``get_state()``
exposes: 624 words, the index of the next word and a countdown to the next twist. torch's
``random_`` fills one element at a time through that state; here the state is read, the
words are made by a compiled loop (twist and tempering in vector registers, ~3x faster) and
the state is written back, so that any later torch draw from the generator (``normal_``)
continues exactly where torch would. ``available()`` checks all this against torch itself
once per process; if the layout ever differs, ``ImageRandomness`` keeps torch's own draws.

Draw kinds, as torch's ``random_`` makes them from the 32-bit words:
``"bits"`` (int32 ``random_()``: a word's low 31 bits), ``"wide"`` (int64 ``random_()``: two
words, high first, low 63 bits) and ``("range", low, span)`` (``random_(low, low + span)``:
word % span + low).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from numba import njit

_STATE_BYTES = 5056  # sizeof(CPUGeneratorImplState) in torch 2.x
_LEFT, _NEXT, _WORDS = 8, 16, 24  # int32 countdown, uint64 next index, 624 uint64 words
u32 = np.uint32


@njit(cache=True, nogil=True)
def _twist(mt):
    for i in range(227):
        y = (mt[i] & u32(0x80000000)) | (mt[i + 1] & u32(0x7FFFFFFF))
        mt[i] = mt[i + 397] ^ (y >> u32(1)) ^ (u32(0x9908B0DF) * (y & u32(1)))
    for i in range(227, 623):
        y = (mt[i] & u32(0x80000000)) | (mt[i + 1] & u32(0x7FFFFFFF))
        mt[i] = mt[i - 227] ^ (y >> u32(1)) ^ (u32(0x9908B0DF) * (y & u32(1)))
    y = (mt[623] & u32(0x80000000)) | (mt[0] & u32(0x7FFFFFFF))
    mt[623] = mt[396] ^ (y >> u32(1)) ^ (u32(0x9908B0DF) * (y & u32(1)))


@njit(inline="always")
def _temper(y):
    y ^= y >> u32(11)
    y ^= (y << u32(7)) & u32(0x9D2C5680)
    y ^= (y << u32(15)) & u32(0xEFC60000)
    return y ^ (y >> u32(18))


@njit(cache=True, nogil=True)
def _words(words, left, position, buffer):
    """Fill ``buffer`` with the generator's next words; update its state in place.

    torch's rule: before each draw the countdown drops by one and at zero the state twists
    (countdown 624, position 0); the word at the position is tempered and the position moves.
    """
    mt = words.astype(np.uint32)
    count, k = buffer.size, 0
    while k < count:
        if left[0] == 1:  # this draw's countdown reaches zero: twist first
            _twist(mt)
            left[0] = 625
            position[0] = 0
        take = min(left[0] - 1, count - k)
        start = position[0]
        for t in range(take):
            buffer[k + t] = _temper(mt[start + t])
        k += take
        position[0] += take
        left[0] -= take
    for i in range(624):
        words[i] = mt[i]


@njit(cache=True, nogil=True)
def _bits(buffer, out):
    for i in range(out.size):
        out[i] = np.int32(buffer[i] & u32(0x7FFFFFFF))


@njit(cache=True, nogil=True)
def _wide(buffer, out):
    for i in range(out.size):
        out[i] = np.int64(((np.uint64(buffer[2 * i]) << np.uint64(32)) | np.uint64(buffer[2 * i + 1])) & np.uint64(2**63 - 1))


@njit(cache=True, nogil=True)
def _range(buffer, low, span, out):
    for i in range(out.size):
        out[i] = np.int32(np.int64(buffer[i] % u32(span)) + low)


def draw(generators, shape, kind) -> torch.Tensor:
    """N×shape draws of ``kind`` (see the module docstring), one generator per image."""
    size = int(np.prod(shape, dtype=np.int64))
    dtype = np.int64 if kind == "wide" else np.int32
    out = np.empty((len(generators), size), dtype)
    buffer = np.empty(size * (2 if kind == "wide" else 1), np.uint32)
    for m, generator in enumerate(generators):
        state = generator.get_state().numpy().copy()
        left = state[_LEFT : _LEFT + 4].view(np.int32)
        position = state[_NEXT : _NEXT + 8].view(np.uint64)
        _words(state[_WORDS : _WORDS + 624 * 8].view(np.uint64), left, position, buffer)
        generator.set_state(torch.from_numpy(state))
        if kind == "bits":
            _bits(buffer, out[m])
        elif kind == "wide":
            _wide(buffer, out[m])
        else:
            _range(buffer, kind[1], kind[2], out[m])
    return torch.from_numpy(out.reshape((len(generators),) + tuple(shape)))


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether these draws and states equal torch's here (checked once, against torch itself)."""
    try:
        seeds = (2**40 + 3, 17)
        ours = [torch.Generator().manual_seed(s) for s in seeds]
        theirs = [torch.Generator().manual_seed(s) for s in seeds]
        if ours[0].get_state().numel() != _STATE_BYTES:
            return False
        for kind, dtype, shape in (("bits", torch.int32, (1000,)), ("wide", torch.int64, (700,)),
                                   (("range", -3, 6), torch.int32, (650,)), ("bits", torch.int32, (7,))):
            expected = torch.stack([torch.empty(shape, dtype=dtype).random_(*(() if isinstance(kind, str) else
                                                                                (kind[1], kind[1] + kind[2])), generator=g)
                                    for g in theirs])
            if not torch.equal(draw(ours, shape, kind), expected):
                return False
        after = [torch.randn(20, generator=g) for g in ours], [torch.randn(20, generator=g) for g in theirs]
        return all(torch.equal(a, b) for a, b in zip(*after))
    except Exception:  # any surprise: keep torch's own draws
        return False

"""Overlapping windows over a sentence too long for the model, and which window owns each word.

Windows hold whole words only (never half a word), at most ``budget`` subword tokens each.
Consecutive windows overlap by at most ``stride`` tokens, so that the words near a cut still
see context on both sides in some window. Each word is *owned* by exactly one window: the one
where it has the most context (its distance in tokens to the nearer window edge that cuts the
sentence; ties go to the earlier window). Only the owner trains on a word and gives its
prediction, so every word is trained once and predicted once.
"""

from __future__ import annotations

import numpy as np


def plan_windows(
    starts: np.ndarray, ends: np.ndarray, budget: int, stride: int
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Windows over words with token spans ``[starts[j], ends[j])``.

    ``starts``/``ends`` are increasing and every span is 1..``budget`` tokens long. Returns the
    windows as word ranges ``(first_word, end_word)`` and ``owner[j]``, the window owning word j.
    """
    n = len(starts)
    if n == 0:
        return [(0, 0)], np.zeros(0, np.int64)
    if np.any(ends - starts > budget) or np.any(ends <= starts):
        raise ValueError("every word must span 1..budget tokens")
    windows = []
    a = 0
    while True:
        b = int(np.searchsorted(ends, starts[a] + budget, side="right"))
        windows.append((a, b))
        if b >= n:
            break
        # Next window: starts up to `stride` tokens before word b, and must still hold word b.
        nxt = min(int(np.searchsorted(starts, ends[b - 1] - stride, side="left")), b)
        while ends[b] - starts[nxt] > budget:
            nxt += 1
        a = max(nxt, a + 1)

    owner = np.zeros(n, np.int64)
    best = np.full(n, -np.inf)
    last = len(windows) - 1
    for k, (a, b) in enumerate(windows):
        left = starts[a:b] - starts[a] if k > 0 else np.full(b - a, np.inf)
        right = ends[b - 1] - ends[a:b] if k < last else np.full(b - a, np.inf)
        context = np.minimum(left, right)
        better = context > best[a:b]
        owner[a:b][better] = k
        best[a:b][better] = context[better]
    return windows, owner

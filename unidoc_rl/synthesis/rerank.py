"""Position-balanced reranking: show the candidates in several orders so a teacher's position bias cancels.

A VLM asked "which of these images answers the question" favours some positions. With the n cyclic rotations of
the candidate list every candidate appears at every position exactly once, so a preference for a position adds
the same vote to every candidate and cannot change the winner.
"""

from __future__ import annotations

from collections.abc import Sequence


def balanced_orders(n: int) -> list[list[int]]:
    """The n cyclic rotations of range(n): order r shows candidate (r + position) % n at each position."""
    if n < 1:
        raise ValueError(f"need at least one candidate, got {n}")
    return [[(rotation + position) % n for position in range(n)] for rotation in range(n)]


def tally(orders: Sequence[Sequence[int]], picks: Sequence[int]) -> list[int]:
    """Votes per candidate, where `picks[i]` is the position chosen when the candidates were shown in `orders[i]`."""
    if len(orders) != len(picks):
        raise ValueError(f"{len(orders)} orders but {len(picks)} picks")
    n = len(orders[0]) if orders else 0
    votes = [0] * n
    for order, pick in zip(orders, picks, strict=True):
        if not 0 <= pick < len(order):
            raise ValueError(f"pick {pick} is not a position of an order of {len(order)} candidates")
        votes[order[pick]] += 1
    return votes


def winner(votes: Sequence[int]) -> int:
    """The candidate with most votes; ties go to the better retrieval rank (the lower index)."""
    if not votes:
        raise ValueError("no votes")
    return max(range(len(votes)), key=lambda candidate: (votes[candidate], -candidate))

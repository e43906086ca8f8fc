"""Reward components: pure functions of the episode record and the ground truth, each in [0, 1].

They read the structured record the agent loop wrote (actions, candidate lists, selections, crops, the final answer),
never decoded text, so tags inside observations or re-prompts cannot count as model actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

from unidoc_rl.env.episode import ActionKind, Box, EpisodeRecord, SearchStep
from unidoc_rl.rewards.ground_truth import GroundTruth


class FormatRule(StrEnum):
    UNIDOC = "unidoc"
    """1.0: searched, selected and answered; 0.5: searched and selected, no answer; else 0."""
    VRAG = "vrag"
    """1.0: searched and answered; else 0."""


class NdcgIdeal(StrEnum):
    ALL_GOLD = "all_gold"
    """The ideal ranking holds every gold page: gold evidence that was never retrieved costs."""
    RANKED_LENGTH = "ranked_length"
    """NDCG@k over the ranked length k: the ideal holds min(#gold, k) gold pages."""


def format_score(episode: EpisodeRecord, rule: FormatRule | str, max_invalid_actions: int = 0) -> float:
    """Whether the trajectory used the action grammar correctly.

    Only valid actions count (an INVALID turn is never a search, select or answer); more than
    `max_invalid_actions` invalid turns make the format 0.
    """
    rule = FormatRule(rule)
    if episode.invalid_actions > max_invalid_actions:
        return 0.0
    searched = ActionKind.SEARCH in episode.actions and bool(episode.searches)
    selected = ActionKind.SELECT in episode.actions and bool(episode.selected_page_ids)
    if rule is FormatRule.VRAG:
        return 1.0 if searched and episode.answered else 0.0
    if searched and selected:
        return 1.0 if episode.answered else 0.5
    return 0.0


def interleave_candidates(searches: Sequence[SearchStep]) -> list[str]:
    """Candidates of all searches merged by rank (rank 0 of every search, then rank 1, ...), first occurrence kept."""
    ranked: list[str] = []
    seen: set[str] = set()
    depth = max((len(step.candidates) for step in searches), default=0)
    for rank in range(depth):
        for step in searches:
            if rank < len(step.candidates) and step.candidates[rank] not in seen:
                seen.add(step.candidates[rank])
                ranked.append(step.candidates[rank])
    return ranked


def ndcg(ranked_ids: Sequence[str], gold_ids: Sequence[str], ideal: NdcgIdeal | str = NdcgIdeal.ALL_GOLD) -> float:
    """Binary-relevance NDCG of the ranked list; ids are compared as whole strings. `ideal` picks the ideal DCG."""
    gold = set(gold_ids)
    if not ranked_ids or not gold:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, page_id in enumerate(ranked_ids) if page_id in gold)
    ideal_hits = len(gold) if NdcgIdeal(ideal) is NdcgIdeal.ALL_GOLD else min(len(gold), len(ranked_ids))
    return dcg / sum(1.0 / math.log2(rank + 2) for rank in range(ideal_hits))


def retrieval_score(episode: EpisodeRecord, truth: GroundTruth, ideal: NdcgIdeal | str = NdcgIdeal.ALL_GOLD) -> float:
    return ndcg(interleave_candidates(episode.served_searches), truth.gold_page_ids, ideal)


def first_gold_candidate(step: SearchStep, gold: set[str]) -> str | None:
    """The highest-ranked gold page among the search's candidates; None when it showed no gold page."""
    return next((page_id for page_id in step.candidates if page_id in gold), None)


def gold_selection_accuracy(episode: EpisodeRecord, truth: GroundTruth) -> float | None:
    """Mean over the served searches whose candidates held a gold page: 1 when the focus page is the first gold
    page among them. None when no search showed a gold page (nothing to judge)."""
    gold = set(truth.gold_page_ids)
    judged = [(step, target) for step in episode.served_searches if (target := first_gold_candidate(step, gold))]
    if not judged:
        return None
    return sum(step.focus_page == target for step, target in judged) / len(judged)


def selection_score(episode: EpisodeRecord, truth: GroundTruth, strict: bool = False) -> float:
    """Mean over served searches: 1 when the focus page is the first gold page among the candidates, or, when no
    gold page was among them, the top-1 candidate. A search that showed nothing new counts as a miss.

    `strict`: only the searches that showed a gold page are judged (`gold_selection_accuracy`); a trajectory none of
    whose searches showed one earns 0."""
    if strict:
        accuracy = gold_selection_accuracy(episode, truth)
        return 0.0 if accuracy is None else accuracy
    searches = episode.served_searches
    if not searches:
        return 0.0
    gold = set(truth.gold_page_ids)
    hits = 0
    for step in searches:
        if not step.candidates:
            continue
        target = first_gold_candidate(step, gold) or step.candidates[0]
        hits += step.focus_page == target
    return hits / len(searches)


def box_iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def matched_box_f1(predicted: Sequence[Box], gold: Sequence[Box], iou_threshold: float = 0.5) -> float:
    """F1 of a maximum one-to-one matching between predicted and gold boxes with IoU >= threshold.

    Both empty: 1.0 (nothing needed, nothing made). Exactly one empty: 0.0.
    """
    if not predicted and not gold:
        return 1.0
    if not predicted or not gold:
        return 0.0
    edges = [[g for g, gold_box in enumerate(gold) if box_iou(box, gold_box) >= iou_threshold] for box in predicted]
    gold_match: dict[int, int] = {}

    def augment(p: int, visited: set[int]) -> bool:
        for g in edges[p]:
            if g in visited:
                continue
            visited.add(g)
            if g not in gold_match or augment(gold_match[g], visited):
                gold_match[g] = p
                return True
        return False

    matches = sum(augment(p, set()) for p in range(len(predicted)))
    return 2.0 * matches / (len(predicted) + len(gold))


def crop_score(episode: EpisodeRecord, truth: GroundTruth, iou_threshold: float = 0.5, strict: bool = False) -> float:
    """Mean matched-box F1 over the pages the agent focused on or cropped, per search.

    Gold boxes count only on pages whose crop is required; elsewhere the right move is not to crop.
    `strict`: only gold pages are judged (a page that is not gold says nothing about whether a crop was needed);
    a trajectory that never focused on or cropped a gold page earns 0.
    """
    gold_pages = set(truth.gold_page_ids)
    scores: list[float] = []
    for step in episode.searches:
        pages = [step.focus_page] + [crop.page_id for crop in step.crops]
        for page_id in dict.fromkeys(page_id for page_id in pages if page_id is not None):
            if strict and page_id not in gold_pages:
                continue
            predicted = [box for crop in step.crops if crop.page_id == page_id for box in crop.boxes_norm1000]
            gold = truth.boxes_for(page_id) if truth.requires_crop(page_id) else ()
            scores.append(matched_box_f1(predicted, gold, iou_threshold))
    return sum(scores) / len(scores) if scores else 0.0

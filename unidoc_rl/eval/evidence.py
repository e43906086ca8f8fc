"""Evidence metrics: what an episode found, chose and localized, from the episode record and the ground truth (pure).

They judge only what can be judged, unlike the `unidoc` reward's selection and crop components (which credit
candidate 0 when no gold page was shown, and not cropping a page that is not gold); the harness reports both, the
reward's under `reward`. None means undefined for the episode (left out of means).

- `recall@k` (k = 1, 3, 5, all): |gold ∩ top-k| / |gold| over the shown candidates of the served searches,
  interleaved by rank as the retrieval reward ranks them; `ndcg`: the retrieval reward. None without gold pages.
- `gold_shown`: the share of the served searches whose candidates held a gold page. None without gold pages or
  without a served search.
- `gold_selection`: selection accuracy over those searches: the focus page (its `<select>`, else candidate 0) is the
  first gold page among the candidates (the strict selection reward). None when no search showed a gold page.
- `crop_rate`: 1 when the episode cropped at all, among samples with a gold page whose crop is required.
- `gold_crop_f1`: the mean, over the gold pages whose crop is required, of the matched-box F1 (IoU ≥ the reward's
  `crop_iou_threshold`) of every box the episode drew on that page against its gold boxes; a page never cropped,
  reached or not, counts 0. None when no gold page requires a crop.
"""

from __future__ import annotations

from unidoc_rl.env.episode import Box, EpisodeRecord
from unidoc_rl.rewards.components import (
    first_gold_candidate,
    gold_selection_accuracy,
    interleave_candidates,
    matched_box_f1,
    ndcg,
)
from unidoc_rl.rewards.ground_truth import GroundTruth

RECALL_KS = (1, 3, 5)
EVIDENCE_METRICS = (
    "recall@1",
    "recall@3",
    "recall@5",
    "recall@all",
    "ndcg",
    "gold_shown",
    "gold_selection",
    "crop_rate",
    "gold_crop_f1",
)
"""Every key `evidence_metrics` returns, in display order."""


def retrieval_metrics(episode: EpisodeRecord, gold: tuple[str, ...]) -> dict[str, float | None]:
    ranked = interleave_candidates(episode.served_searches)
    metrics: dict[str, float | None] = {}
    gold_set = set(gold)
    for k in RECALL_KS:
        metrics[f"recall@{k}"] = len(gold_set & set(ranked[:k])) / len(gold_set) if gold_set else None
    metrics["recall@all"] = len(gold_set & set(ranked)) / len(gold_set) if gold_set else None
    metrics["ndcg"] = ndcg(ranked, gold) if gold_set else None
    return metrics


def gold_shown(episode: EpisodeRecord, truth: GroundTruth) -> float | None:
    searches = episode.served_searches
    if not searches or not truth.gold_page_ids:
        return None
    gold = set(truth.gold_page_ids)
    return sum(first_gold_candidate(step, gold) is not None for step in searches) / len(searches)


def gold_crop_f1(episode: EpisodeRecord, truth: GroundTruth, iou_threshold: float) -> float | None:
    pages = [page_id for page_id in truth.gold_page_ids if truth.requires_crop(page_id)]
    if not pages:
        return None
    scores = [matched_box_f1(boxes_drawn(episode, page), truth.boxes_for(page), iou_threshold) for page in pages]
    return sum(scores) / len(scores)


def boxes_drawn(episode: EpisodeRecord, page_id: str) -> list[Box]:
    """Every box the episode drew on the page, over all its crops (0-1000 frame)."""
    return [box for crop in episode.crops if crop.page_id == page_id for box in crop.boxes_norm1000]


def evidence_metrics(episode: EpisodeRecord, truth: GroundTruth, crop_iou_threshold: float) -> dict[str, float | None]:
    needs_crop = any(truth.requires_crop(page_id) for page_id in truth.gold_page_ids)
    return {
        **retrieval_metrics(episode, truth.gold_page_ids),
        "gold_shown": gold_shown(episode, truth),
        "gold_selection": gold_selection_accuracy(episode, truth),
        "crop_rate": (1.0 if episode.cropped else 0.0) if needs_crop else None,
        "gold_crop_f1": gold_crop_f1(episode, truth, crop_iou_threshold),
    }

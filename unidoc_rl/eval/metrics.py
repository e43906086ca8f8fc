"""Per-episode evaluation metrics, from the episode record and the ground truth (pure functions).

Retrieval is measured on what was shown: the candidates of all successful searches, interleaved by rank and
de-duplicated (the reward's ranking). Recall@k = |gold ∩ top-k| / |gold| and NDCG (the reward's) are undefined
(None) for a sample without evidence pages; selection and crop F1 are the reward's components; crop F1 is
defined only where a gold page requires a crop, and so is the crop rate (did it crop where a crop was
needed); `crop_any` is the share of all episodes with a crop. Benchmark scores: MMLongBench-Doc's
extracted-answer score and SlideVQA's EM/F1.
"""

from __future__ import annotations

from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.eval import mmlongbench, slidevqa
from unidoc_rl.eval.samples import EvalSample
from unidoc_rl.rewards.components import crop_score, interleave_candidates, ndcg, selection_score

RECALL_KS = (1, 3, 5)


def shown_ranking(episode: EpisodeRecord) -> list[str]:
    return interleave_candidates([step for step in episode.searches if not step.failed])


def retrieval_metrics(episode: EpisodeRecord, gold: tuple[str, ...]) -> dict[str, float | None]:
    ranked = shown_ranking(episode)
    metrics: dict[str, float | None] = {}
    gold_set = set(gold)
    for k in RECALL_KS:
        metrics[f"recall@{k}"] = len(gold_set & set(ranked[:k])) / len(gold_set) if gold_set else None
    metrics["recall@all"] = len(gold_set & set(ranked)) / len(gold_set) if gold_set else None
    metrics["ndcg"] = ndcg(ranked, gold) if gold_set else None
    return metrics


def episode_metrics(episode: EpisodeRecord, sample: EvalSample, crop_iou_threshold: float) -> dict:
    truth = sample.truth
    needs_crop = any(truth.requires_crop(page_id) for page_id in truth.gold_page_ids)
    return {
        **retrieval_metrics(episode, truth.gold_page_ids),
        "selection": selection_score(episode, truth) if episode.searches else 0.0,
        "crop_rate": (1.0 if episode.crops else 0.0) if needs_crop else None,
        "crop_f1": crop_score(episode, truth, crop_iou_threshold) if needs_crop else None,
        "crop_any": 1.0 if episode.crops else 0.0,
        "invalid_rate": episode.invalid_actions / episode.num_turns if episode.num_turns else 0.0,
        "any_invalid": 1.0 if episode.invalid_actions else 0.0,
        "answered": 1.0 if episode.answer is not None and episode.answer.strip() else 0.0,
        "searches": float(len(episode.searches)),
        "search_failures": float(episode.search_failures),
        "turns": float(episode.num_turns),
        "finish_reason": episode.finish_reason.value if episode.finish_reason else "none",
    }


def native_scores(sample: EvalSample, answer: str | None) -> dict:
    """The benchmark's own metric for one answer (empty for benchmarks scored only by the judge)."""
    if sample.benchmark == "mmlongbench":
        answer_format = sample.answer_format or "Str"
        extracted = mmlongbench.extract_answer(answer, answer_format)
        return {
            "mmlb_pred": extracted,
            "mmlb_score": mmlongbench.score_answer(sample.reference_answer, extracted, answer_format),
        }
    if sample.benchmark == "slidevqa":
        text = answer or ""
        return {
            "slidevqa_em": slidevqa.exact_match(text, sample.reference_answer, sample.query),
            "slidevqa_f1": slidevqa.token_f1(text, sample.reference_answer, sample.query),
        }
    return {}

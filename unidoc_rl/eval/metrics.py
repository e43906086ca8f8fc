"""Per-episode evaluation metrics, from the episode record and the ground truth (pure functions).

The evidence metrics (`unidoc_rl/eval/evidence.py`: recall@k, NDCG, the share of searches that showed a gold page,
selection over those searches, crop rate and crop F1 over the gold pages that require a crop), the episode's
behaviour (`crop_any`: share of all episodes with a crop, invalid turns, answered, searches, turns, finish reason),
and the benchmarks' own scores: MMLongBench-Doc's extracted-answer score and SlideVQA's EM/F1. The reward's
components are not repeated here: the harness stores them under `reward`.
"""

from __future__ import annotations

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.eval import mmlongbench, slidevqa
from unidoc_rl.eval.evidence import evidence_metrics
from unidoc_rl.eval.samples import EvalSample


def episode_metrics(episode: EpisodeRecord, sample: EvalSample, crop_iou_threshold: float) -> dict:
    return {
        **evidence_metrics(episode, sample.truth, crop_iou_threshold),
        "crop_any": 1.0 if episode.cropped else 0.0,
        "invalid_rate": episode.invalid_actions / episode.num_turns if episode.num_turns else 0.0,
        "any_invalid": 1.0 if episode.invalid_actions else 0.0,
        "answered": 1.0 if episode.answered else 0.0,
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

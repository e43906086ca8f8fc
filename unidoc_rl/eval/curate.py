"""Data curation from evaluation runs (the paper's data recipe).

    # SFT difficulty filter: keep the samples a model answers wrongly (every episode of the run wrong)
    python -m unidoc_rl.eval --samples S.json ... --model-path BASE --out_dir runs/base
    python -m unidoc_rl.eval.curate sft --run runs/base --samples S.json --out data/sft_hard.json

    # RL set: n rollouts at a high temperature with the SFT model; keep the samples where some rollout was shown
    # a gold page and some answer was wrong; write the RL parquet through unidoc_rl.data.prepare
    python -m unidoc_rl.eval --samples S.json ... --model-path SFT --n 5 --temperature 1.0 --out_dir runs/sft
    python -m unidoc_rl.eval.curate rl --run runs/sft --samples S.json --out_dir data/rl

An answer is wrong when its accuracy (the judge's verdict) is below 0.5. Samples the run has no episode for are
listed and left out. Samples without evidence pages never enter the RL set (no page can be found).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from unidoc_rl.common.atomic import atomic_write_bytes
from unidoc_rl.eval.runner import RESULTS_FILE, read_results
from unidoc_rl.eval.samples import EvalSample, load_eval_samples

logger = logging.getLogger(__name__)
WRONG_BELOW = 0.5


def episodes_by_sample(results: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for result in results:
        grouped[(result["benchmark"], result["uid"])].append(result)
    return grouped


def _wrong(result: dict) -> bool:
    return result["accuracy"] < WRONG_BELOW


def _found_gold(result: dict) -> bool:
    recall = result["metrics"].get("recall@all")
    return recall is not None and recall > 0


def split_by_rule(samples: Sequence[EvalSample], results: Sequence[dict], keep) -> tuple[list, list, list]:
    """(kept, dropped, not evaluated) by `keep(episodes) -> bool`."""
    grouped = episodes_by_sample(results)
    kept, dropped, missing = [], [], []
    for sample in samples:
        episodes = grouped.get((sample.benchmark, sample.uid))
        if not episodes:
            missing.append(sample)
        elif keep(episodes):
            kept.append(sample)
        else:
            dropped.append(sample)
    return kept, dropped, missing


def hard_for_sft(episodes: list[dict]) -> bool:
    return all(_wrong(result) for result in episodes)


def useful_for_rl(episodes: list[dict]) -> bool:
    return any(_found_gold(result) for result in episodes) and any(_wrong(result) for result in episodes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Curate SFT / RL data from an evaluation run.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("sft", "difficulty filter for SFT"), ("rl", "RL set, written as RL parquet")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--run", type=Path, required=True, help="evaluation run folder (results.jsonl)")
        command.add_argument("--samples", type=Path, nargs="+", required=True, help="the run's unified samples")
    commands.choices["sft"].add_argument("--out", type=Path, required=True, help="kept samples (JSON list)")
    rl = commands.choices["rl"]
    rl.add_argument("--out_dir", type=Path, required=True, help="train.parquet and val.parquet")
    rl.add_argument("--data_source", default="curated")
    rl.add_argument("--val_size", type=float, default=0.1, help="fraction (<1) or count (>=1) for val")
    rl.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    samples = load_eval_samples(args.samples)
    results = read_results(args.run / RESULTS_FILE)
    rule = hard_for_sft if args.command == "sft" else useful_for_rl
    kept, dropped, missing = split_by_rule(samples, results, rule)
    for sample in missing:
        logger.warning("no episode of %s/%s in %s: left out", sample.benchmark, sample.uid, args.run)
    if args.command == "sft":
        payload = json.dumps([sample.raw for sample in kept], indent=1, ensure_ascii=False)
        atomic_write_bytes(args.out, payload.encode("utf-8"))
        target = args.out
    else:
        from unidoc_rl.data.prepare import SampleValidationError, prepare, write_parquet

        val_size = int(args.val_size) if args.val_size >= 1 else args.val_size
        try:
            split = prepare([s.raw for s in kept], data_source=args.data_source, val_size=val_size, seed=args.seed)
        except SampleValidationError as error:
            raise SystemExit(str(error)) from None
        write_parquet(split.train, args.out_dir / "train.parquet")
        write_parquet(split.val, args.out_dir / "val.parquet")
        target = args.out_dir
    print(json.dumps({"kept": len(kept), "dropped": len(dropped), "not_evaluated": len(missing), "out": str(target)}))


if __name__ == "__main__":
    main()

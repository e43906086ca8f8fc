"""Teacher trajectories (generate_cot_data.py output) → LLaMA-Factory's ShareGPT multimodal JSON.

    python synthetic_data/convert_to_llamafactory.py --input-path out.jsonl \\
        --output-path LLaMA-Factory/data/unidoc_sft.json

Keeps the trajectories the judge called correct (`--verdict` changes that; the verdict is a field of the input,
never a turn of the output). Each record is `{"messages": [...], "images": [...]}` with the system prompt as the
first message, then strictly alternating user/assistant turns ending on the assistant's answer, one `<image>` per
image in user turns only, and absolute image paths in placeholder order.

LLaMA-Factory aborts the whole run on one sample whose `<image>` count differs from its images, and trains on image
tokens placed in assistant turns; such samples are rejected here one by one, with their uid, and the rest is
written. The output is written atomically; a summary (kept, dropped by verdict, rejected per uid) is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unidoc_rl.common.atomic import atomic_write_bytes

IMAGE_PLACEHOLDER = "<image>"
VERDICTS = ("yes", "no", "any")
logger = logging.getLogger("synthetic_data.convert")


class RejectedSample(ValueError):
    pass


@dataclass
class Conversion:
    records: list[dict[str, Any]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped_by_verdict: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    """uid → reason."""
    partial_last_line: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "kept": len(self.kept),
            "dropped_by_verdict": len(self.dropped_by_verdict),
            "rejected": self.rejected,
            "partial_last_line_skipped": self.partial_last_line,
        }


def to_sharegpt(line: dict[str, Any], root: Path) -> dict[str, Any]:
    """One trajectory as a LLaMA-Factory record; raises RejectedSample with the reason."""
    messages = line.get("messages")
    images = line.get("images")
    if not isinstance(messages, list) or not messages or not isinstance(images, list):
        raise RejectedSample("messages must be a non-empty list and images a list")
    turns = messages[1:] if messages[0].get("role") == "system" else messages
    out = [messages[0]] if turns is not messages else []
    placeholders = 0
    for position, message in enumerate(turns):
        role, content = message.get("role"), message.get("content")
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            raise RejectedSample(f"turn {position} is {role!r}, expected {expected!r} (turns must alternate)")
        if not isinstance(content, str):
            raise RejectedSample(f"turn {position} content is not text")
        count = content.count(IMAGE_PLACEHOLDER)
        if role == "assistant" and count:
            raise RejectedSample(
                f"assistant turn {position} contains {IMAGE_PLACEHOLDER} (its image tokens would be trained)"
            )
        placeholders += count
        out.append({"role": role, "content": content})
    if not turns or turns[-1].get("role") != "assistant":
        raise RejectedSample("the trajectory must end with an assistant turn")
    if placeholders != len(images):
        raise RejectedSample(f"{placeholders} {IMAGE_PLACEHOLDER} placeholders but {len(images)} images")
    paths = []
    for image in images:
        path = Path(image)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise RejectedSample(f"image {image} does not exist")
        paths.append(str(path.resolve()))
    return {"messages": out, "images": paths}


def convert(input_path: Path, verdict: str = "yes") -> Conversion:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    result = Conversion()
    text = input_path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        result.partial_last_line = True  # a write cut short by a crash; the sample is redone on resume
        lines = lines[:-1]
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as error:
            result.rejected[f"<line {number}>"] = f"not JSON: {error.msg}"
            continue
        uid = str(line.get("uid", f"<line {number}>"))
        correct = line.get("verdict")
        if not isinstance(correct, bool):
            result.rejected[uid] = f"verdict must be true or false, got {correct!r}"
            continue
        if (verdict == "yes" and not correct) or (verdict == "no" and correct):
            result.dropped_by_verdict.append(uid)
            continue
        try:
            result.records.append(to_sharegpt(line, input_path.parent))
        except RejectedSample as error:
            result.rejected[uid] = str(error)
            continue
        result.kept.append(uid)
    # The teacher finishes samples in any order (concurrent requests, resumes), so the dataset is ordered by uid:
    # one set of trajectories always makes one file, and the SFT run that reads it sees the same example order.
    order = sorted(range(len(result.kept)), key=lambda index: result.kept[index])
    result.kept = [result.kept[index] for index in order]
    result.records = [result.records[index] for index in order]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Teacher trajectories (JSONL) → LLaMA-Factory ShareGPT JSON.")
    parser.add_argument("--input-path", type=Path, required=True, help="generate_cot_data.py output (JSONL)")
    parser.add_argument("--output-path", type=Path, required=True, help="LLaMA-Factory dataset file (JSON)")
    parser.add_argument(
        "--verdict", choices=VERDICTS, default="yes", help="keep trajectories judged correct (yes), wrong (no), or all"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = convert(args.input_path, args.verdict)
    for uid, reason in result.rejected.items():
        logger.warning("rejected %s: %s", uid, reason)
    atomic_write_bytes(args.output_path, json.dumps(result.records, ensure_ascii=False, indent=1).encode("utf-8"))
    print(json.dumps({"output": str(args.output_path), **result.summary()}, indent=1))
    return 0 if result.records else 1


if __name__ == "__main__":
    raise SystemExit(main())

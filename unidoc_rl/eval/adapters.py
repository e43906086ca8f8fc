"""Benchmark annotation files → unified evaluation samples (docs/evaluation.md) with categories and page ids.

    python -m unidoc_rl.eval.adapters mmlongbench --input samples.json --out data/eval/mmlongbench.json
    python -m unidoc_rl.eval.adapters slidevqa --input test.jsonl --out data/eval/slidevqa.json
    python -m unidoc_rl.eval.adapters vidoseek --input vidoseek.json --out data/eval/vidoseek.json
    python -m unidoc_rl.eval.adapters check --samples data/eval/*.json --index_dir index/

Page ids are `{doc_stem}_{page}` with 1-indexed pages, as every benchmark's renderer names its page images. Records
that cannot be evaluated (a page 0, a page beyond the document) are left out and listed, never silently kept; the
command exits non-zero when any record was left out, after writing the rest.

Categories (a sample counts once under each of its values):
- SlideVQA: `hop` (single-hop / multi-hop; from `reasoning_type` or a VRAG `query_type`, else from the number of
  evidence pages, which the Hugging Face release implies) and `answer_type` (single-span / multi-span / non-span).
- ViDoSeek: `query_type` (as released, e.g. single-hop, multi-hop, content_extraction) and `source_type` (text,
  table, chart, layout ...). A SlideVQA-style `Multi-Hop_Single-Span` query type is split as ViDoRAG does.
- MMLongBench-Doc: `evidence_source` (text, layout, table, chart, figure), `evidence_pages` (single-page /
  cross-page / unanswerable, the benchmark's overlapping groups), `doc_type`, `answer_format`.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unidoc_rl.common.atomic import atomic_write_bytes
from unidoc_rl.eval.mmlongbench import NOT_ANSWERABLE
from unidoc_rl.eval.samples import load_eval_samples, missing_from_index, read_sample_file

logger = logging.getLogger(__name__)

MMLONGBENCH_SOURCES = {
    "Pure-text (Plain-text)": "text",
    "Generalized-text (Layout)": "layout",
    "Table": "table",
    "Chart": "chart",
    "Figure": "figure",
}


@dataclass
class Conversion:
    samples: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Record id → why it was left out."""


_LABEL_ALIASES = {"2d-layout": "layout", "pure-text": "text"}


def _label(value: str) -> str:
    label = value.strip().lower().replace("_", "-").replace(" ", "-")
    return _LABEL_ALIASES.get(label, label)


def _check_pages(pages, count: int | None) -> str | None:
    if not isinstance(pages, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in pages):
        return f"evidence pages must be a list of ints, got {pages!r}"
    bad = [p for p in pages if p < 1 or (count is not None and p > count)]
    if bad:
        limit = f"1..{count}" if count is not None else ">= 1"
        return f"evidence pages {bad} outside the document's pages ({limit})"
    return None


def unified(uid, query, answer, file_name, pages, benchmark, categories, **meta) -> dict:
    return {
        "uid": str(uid),
        "query": query,
        "reference_answer": answer,
        "meta_info": {
            "file_name": file_name,
            "reference_page": list(pages),
            "benchmark": benchmark,
            "categories": categories,
            **meta,
        },
    }


# --- MMLongBench-Doc ---------------------------------------------------------------------------------------------


def mmlongbench_page_groups(pages: list[int], answer: str) -> list[str]:
    """The benchmark's breakdown groups: single-page (one page), cross-page (answerable, not one page), unanswerable."""
    groups = []
    if len(pages) == 1:
        groups.append("single-page")
    if answer == NOT_ANSWERABLE:
        groups.append("unanswerable")
    elif len(pages) != 1:
        groups.append("cross-page")
    return groups


def convert_mmlongbench(records: list[dict], page_counts: dict[str, int | None] | None = None) -> Conversion:
    """`data/samples.json` of MMLongBench-Doc: every value a string, list fields as Python literals."""
    out = Conversion()
    page_counts = page_counts or {}
    for index, record in enumerate(records):
        uid = f"mmlongbench-{index}"
        try:
            pages = ast.literal_eval(record["evidence_pages"])
            sources = ast.literal_eval(record["evidence_sources"])
            problem = _check_pages(pages, page_counts.get(record["doc_id"]))
            if problem is None and not isinstance(sources, list):
                problem = f"evidence_sources must be a list, got {sources!r}"
        except (KeyError, ValueError, SyntaxError) as error:
            problem = f"unreadable record: {error}"
        if problem:
            out.skipped[uid] = problem
            continue
        unknown = [source for source in sources if source not in MMLONGBENCH_SOURCES]
        if unknown:
            out.skipped[uid] = f"unknown evidence sources {unknown}"
            continue
        answer = record["answer"]
        out.samples.append(
            unified(
                uid,
                record["question"],
                answer,
                record["doc_id"],
                list(dict.fromkeys(pages)),  # a few records list a page twice
                "mmlongbench",
                {
                    "evidence_source": sorted({MMLONGBENCH_SOURCES[source] for source in sources}),
                    "evidence_pages": mmlongbench_page_groups(pages, answer),  # on the list as released
                    "doc_type": [record["doc_type"]],
                    "answer_format": [record["answer_format"]],
                },
                answer_format=record["answer_format"],
                source_type=sources,
                doc_type=record["doc_type"],
            )
        )
    return out


# --- SlideVQA ----------------------------------------------------------------------------------------------------


def _slidevqa_types(record: dict) -> tuple[str, str | None]:
    """(hop, answer type) from `reasoning_type`/`answer_type`, a VRAG `query_type`, or the evidence count."""
    combined = " ".join(str(record.get(key) or "") for key in ("reasoning_type", "answer_type", "query_type"))
    if "Multi-Hop" in combined or "multi-hop" in combined.lower():
        hop = "multi-hop"
    elif "Single-Hop" in combined or "single-hop" in combined.lower():
        hop = "single-hop"
    else:
        pages = record.get("evidence_pages") or record.get("reference_page") or []
        hop = "multi-hop" if len(pages) > 1 else "single-hop"
    answer_type = next(
        (_label(kind) for kind in ("Single-Span", "Multi-Span", "Non-Span") if kind.lower() in combined.lower()), None
    )
    return hop, answer_type


def convert_slidevqa(records: list[dict], split: str = "test") -> Conversion:
    """The GitHub jsonl / Hugging Face rows (`deck_name`, `qa_id`, `question`, `answer`, `evidence_pages`), or the
    VRAG unified conversion (`uid`, `query`, `meta_info.query_type` such as `Single-Hop_Single-Span`)."""
    out = Conversion()
    for index, record in enumerate(records):
        if "meta_info" in record:
            meta = record["meta_info"]
            uid, query, answer = record.get("uid", index), record.get("query"), record.get("reference_answer")
            file_name, pages = meta.get("file_name", ""), meta.get("reference_page")
            hop, answer_type = _slidevqa_types({**meta, "reference_page": pages})
        else:
            uid = f"slidevqa-{split}-{record.get('qa_id', index)}"
            query, answer = record.get("question"), record.get("answer")
            file_name, pages = f"{record.get('deck_name', '')}.pdf", record.get("evidence_pages")
            hop, answer_type = _slidevqa_types(record)
        problem = _check_pages(pages, 20) or (None if query and answer is not None else "missing question or answer")
        if problem is None and file_name in ("", ".pdf"):
            problem = "missing deck_name / file_name"
        if problem:
            out.skipped[str(uid)] = problem
            continue
        categories = {"hop": [hop]}
        if answer_type:
            categories["answer_type"] = [answer_type]
        out.samples.append(unified(uid, query, str(answer), file_name, pages, "slidevqa", categories, query_type=hop))
    return out


# --- ViDoSeek ----------------------------------------------------------------------------------------------------


def convert_vidoseek(records: list[dict]) -> Conversion:
    """`vidoseek.json` (`{"examples": [...]}` of unified records with `query_type` and `source_type`)."""
    out = Conversion()
    for index, record in enumerate(records):
        meta = record.get("meta_info") or {}
        uid = record.get("uid", f"vidoseek-{index}")
        pages = meta.get("reference_page")
        query_type, source_type = str(meta.get("query_type") or "unknown"), meta.get("source_type") or "unknown"
        if "-Hop" in query_type and "_" in query_type:
            query_type, source_type = query_type.split("_")[0], query_type.split("_")[-1]
        sources = source_type if isinstance(source_type, list) else [source_type]
        problem = _check_pages(pages, None)
        if problem is None and not (record.get("query") and meta.get("file_name")):
            problem = "missing query or meta_info.file_name"
        if problem:
            out.skipped[str(uid)] = problem
            continue
        out.samples.append(
            unified(
                uid,
                record["query"],
                str(record.get("reference_answer", "")),
                meta["file_name"],
                pages,
                "vidoseek",
                {"query_type": [_label(query_type)], "source_type": sorted({_label(str(s)) for s in sources})},
                query_type=meta.get("query_type"),
                source_type=meta.get("source_type"),
            )
        )
    return out


def read_records(path: Path) -> list[dict]:
    """JSON list, `{"examples": [...]}`, a single record object, or JSON Lines."""
    if path.suffix != ".jsonl":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "examples" not in data:
            return [data]
    return read_sample_file(path)


CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "mmlongbench": convert_mmlongbench,
    "slidevqa": convert_slidevqa,
    "vidoseek": convert_vidoseek,
}


def check_corpus(sample_files: Iterable[Path], index_dirs: Iterable[Path]) -> dict[str, list[str]]:
    """Evidence pages absent from the union of the given indexes (a merged corpus is the union of several)."""
    from unidoc_rl.data.prepare import index_page_ids

    known: set[str] = set()
    for directory in index_dirs:
        known |= index_page_ids(Path(directory))
    return missing_from_index(load_eval_samples(sample_files), known)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert benchmark annotations into unified evaluation samples.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in CONVERTERS:
        convert = commands.add_parser(name, help=f"convert {name} annotations")
        convert.add_argument("--input", type=Path, required=True, help="the benchmark's released annotation file")
        convert.add_argument("--out", type=Path, required=True, help="unified samples (JSON list) to write")
        if name == "mmlongbench":
            convert.add_argument(
                "--page_counts", type=Path, default=None, help='JSON {"pages": {doc_id: count}} to check pages'
            )
        if name == "slidevqa":
            convert.add_argument("--split", default="test", help="split name used in uids")
    check = commands.add_parser("check", help="check that every evidence page is in the index (corpus check)")
    check.add_argument("--samples", type=Path, nargs="+", required=True)
    check.add_argument("--index_dir", type=Path, nargs="+", required=True, help="one index, or several (merged)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "check":
        absent = check_corpus(args.samples, args.index_dir)
        for uid, pages in absent.items():
            print(f"{uid}: not in the index: {', '.join(pages)}")
        print(f"{len(absent)} sample(s) with evidence pages missing from the index")
        sys.exit(1 if absent else 0)

    records = read_records(args.input)
    if args.command == "mmlongbench":
        counts = json.loads(args.page_counts.read_text())["pages"] if args.page_counts else None
        conversion = convert_mmlongbench(records, counts)
    elif args.command == "slidevqa":
        conversion = convert_slidevqa(records, args.split)
    else:
        conversion = convert_vidoseek(records)
    atomic_write_bytes(args.out, json.dumps(conversion.samples, indent=1, ensure_ascii=False).encode("utf-8"))
    for uid, reason in conversion.skipped.items():
        logger.warning("left out %s: %s", uid, reason)
    logger.info("wrote %d samples to %s; %d left out", len(conversion.samples), args.out, len(conversion.skipped))
    sys.exit(1 if conversion.skipped else 0)


if __name__ == "__main__":
    main()

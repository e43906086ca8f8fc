"""A scripted teacher on loopback: an OpenAI-compatible server that plays every teacher role from gold annotations.

It stands in for the teacher VLM and LLM of `synthetic_data/generate_cot_data.py` in tests and the CPU demo.
Each request names its role (`Role: <role>.` in the system message) and its question (`Question: ...`); the
teacher looks the question up among the samples it was given and answers as an oracle:

- plan: search with the question itself; decide: answer with the reference once a gold page was read, else
  search again with the question and the document's name, and when it must answer without evidence, say so;
- rerank: the best-ranked gold page among the shown ones, else the best-ranked one; region: crop the gold box
  where the sample says a crop is required (with the blocks that overlap it), else no crop; read: the reference
  answer on a gold page, "nothing" elsewhere; judge: normalized exact match of the judge prompt's candidate and
  reference.

Deterministic: replies depend only on the request. Fault switches (`TeacherFaults`) inject, per uid and role,
wrong pages, malformed JSON, HTTP 5xx and timeouts for the first `times` requests (all of them with `times=None`).

    with ScriptedTeacher(samples, TeacherFaults(...)) as teacher:
        ... --vllm-engine-url {teacher.base_url} ...

CLI (an oracle teacher for the bundled samples): `python -m unidoc_rl.standins.scripted_teacher --port 9000`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unidoc_rl.judge.prompt import extract_sections
from unidoc_rl.rewards.answer_match import exact_match
from unidoc_rl.rewards.components import box_iou
from unidoc_rl.standins.scripted_llm_server import ChatRequest, Reply, ScriptedLLMServer

FAULT_KINDS = ("malformed_json", "server_error", "timeout")
_ROLE = re.compile(r"^Role: (\w+)\.", re.MULTILINE)
_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)
_IMAGE_PAGE = re.compile(r"^Image (\d+): page (\S+) \(search rank (\d+)\)$", re.MULTILINE)
_PAGE = re.compile(r"^Page: (\S+)$", re.MULTILINE)
_BLOCK = re.compile(r"^(\d+): \[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]$", re.MULTILINE)
_EVIDENCE_PAGE = re.compile(r"^- page (\S+): (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class GoldSample:
    uid: str
    query: str
    reference_answer: str
    gold_pages: tuple[str, ...]
    boxes: dict[str, tuple[tuple[float, float, float, float], ...]]
    crop_required: dict[str, bool]
    document: str

    @classmethod
    def from_unified(cls, sample: dict) -> GoldSample:
        meta = sample["meta_info"]
        stem = Path(meta["file_name"]).stem
        pages = [f"{stem}_{page}" for page in meta["reference_page"]]
        boxes = meta.get("reference_boxes") or [[] for _ in pages]
        required = meta.get("crop_required") or [bool(b) for b in boxes]
        return cls(
            uid=str(sample["uid"]),
            query=sample["query"],
            reference_answer=sample["reference_answer"],
            gold_pages=tuple(pages),
            boxes={
                page: tuple(tuple(map(float, box)) for box in page_boxes)
                for page, page_boxes in zip(pages, boxes, strict=True)
            },
            crop_required={page: bool(flag) for page, flag in zip(pages, required, strict=True)},
            document=stem.replace("_", " "),
        )


@dataclass(frozen=True)
class FaultRule:
    kind: str
    """`malformed_json`, `server_error` (HTTP 503) or `timeout` (the reply comes after `delay_s`)."""
    uids: frozenset[str] | None = None
    """Samples it applies to (None: all)."""
    roles: frozenset[str] | None = None
    """Roles it applies to (None: all)."""
    times: int | None = 1
    """Requests per (uid, role) it hits, from the first; None: every one."""
    delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class TeacherFaults:
    wrong_pages: frozenset[str] = frozenset()
    """uids whose reranker prefers a page that is not gold (and whose reader then finds nothing)."""
    rules: tuple[FaultRule, ...] = ()


@dataclass
class _Counters:
    by_key: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, key) -> int:
        with self.lock:
            self.by_key[key] += 1
            return self.by_key[key]


class ScriptedTeacher:
    """The scripted teacher behind a real OpenAI-compatible HTTP server on loopback."""

    def __init__(
        self,
        samples: Iterable[dict],
        faults: TeacherFaults = TeacherFaults(),
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.gold = {sample.query: sample for sample in map(GoldSample.from_unified, samples)}
        self.faults = faults
        self.latency_s = latency_s
        """Delay before every well-formed reply."""
        self._counters = _Counters()
        self.server = ScriptedLLMServer(self._reply, host=host, port=port)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[ChatRequest]:
        return self.server.requests

    def start(self) -> ScriptedTeacher:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> ScriptedTeacher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def asked_uids(self) -> set[str]:
        """The samples the teacher was asked about (judge requests name no sample)."""
        return {sample.uid for sample in map(self._sample_of, self.requests) if sample is not None}

    # --- dispatch ------------------------------------------------------------------------------------------------

    def _sample_of(self, request: ChatRequest) -> GoldSample | None:
        match = _QUESTION.search(_user_text(request.body))
        return self.gold.get(match.group(1).strip()) if match else None

    def _reply(self, request: ChatRequest) -> Reply:
        role_match = _ROLE.search(_system_text(request.body))
        role = role_match.group(1) if role_match else ""
        if role == "judge":
            return Reply(content=self._judge(request), delay_s=self.latency_s)
        sample = self._sample_of(request)
        if sample is None:
            return Reply(status=400, raw_body=json.dumps({"error": {"message": "unknown question"}}))
        fault = self._fault(sample.uid, role)
        if fault is not None:
            return fault
        text = _user_text(request.body)
        handler = {
            "plan": self._plan,
            "rerank": self._rerank,
            "region": self._region,
            "read": self._read,
            "decide": self._decide,
        }.get(role)
        if handler is None:
            return Reply(status=400, raw_body=json.dumps({"error": {"message": f"unknown role {role!r}"}}))
        return Reply(content=json.dumps(handler(sample, text)), delay_s=self.latency_s)

    def _fault(self, uid: str, role: str) -> Reply | None:
        for index, rule in enumerate(self.faults.rules):
            if (rule.uids is not None and uid not in rule.uids) or (rule.roles is not None and role not in rule.roles):
                continue
            seen = self._counters.next((index, uid, role))
            if rule.times is not None and seen > rule.times:
                continue
            if rule.kind == "malformed_json":
                return Reply(content='{"think": "cut off mid-reply", "sea')
            if rule.kind == "server_error":
                return Reply(status=503)
            return Reply(content="{}", delay_s=rule.delay_s)
        return None

    # --- roles ---------------------------------------------------------------------------------------------------

    def _plan(self, sample: GoldSample, text: str) -> dict:
        return {"think": "I need to find the page that answers this.", "search": sample.query}

    def _rerank(self, sample: GoldSample, text: str) -> dict:
        listed = [(int(position), page, int(rank)) for position, page, rank in _IMAGE_PAGE.findall(text)]
        shown = [page for _, page, _ in sorted(listed)]
        by_rank = [page for _, page, _ in sorted(listed, key=lambda item: item[2])]
        if sample.uid in self.faults.wrong_pages:
            target = next((page for page in by_rank if page not in sample.gold_pages), by_rank[0])
        else:  # the best-ranked gold page: the one the selection reward expects
            target = next((page for page in by_rank if page in sample.gold_pages), by_rank[0])
        return {"think": "This page looks most relevant to the question.", "best": shown.index(target)}

    def _region(self, sample: GoldSample, text: str) -> dict:
        page = _PAGE.search(text).group(1)
        if sample.uid in self.faults.wrong_pages or not sample.crop_required.get(page):
            return {"think": "The answer is legible on the whole page.", "crop": False}
        gold = sample.boxes[page][0]
        blocks = [int(m[0]) for m in _BLOCK.findall(text) if box_iou(tuple(map(float, m[1:])), gold) > 0]
        return {"think": "The value is small; zoom into it.", "crop": True, "blocks": blocks, "box": list(gold)}

    def _read(self, sample: GoldSample, text: str) -> dict:
        page = _PAGE.search(text).group(1)
        if page in sample.gold_pages and sample.uid not in self.faults.wrong_pages:
            return {"think": "I read the relevant passage.", "evidence": f"The page says: {sample.reference_answer}."}
        return {"think": "I read the page.", "evidence": "Nothing about the question."}

    def _decide(self, sample: GoldSample, text: str) -> dict:
        read = dict(_EVIDENCE_PAGE.findall(text))
        if any(page in sample.gold_pages and not evidence.startswith("Nothing") for page, evidence in read.items()):
            return {"think": "The evidence answers the question.", "answer": sample.reference_answer}
        if "You must answer now." in text:
            return {"think": "The pages I read do not say.", "answer": "The documents do not say."}
        return {"think": "Not found yet; search the document by name.", "search": f"{sample.document} {sample.query}"}

    def _judge(self, request: ChatRequest) -> str:
        sections = extract_sections(_user_text(request.body))
        return f"<judge>{exact_match(sections['candidate'], sections['reference']) == 1.0}</judge>"


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _user_text(body: dict) -> str:
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return _content_text(users[-1].get("content")) if users else ""


def _system_text(body: dict) -> str:
    systems = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "system"]
    return _content_text(systems[0].get("content")) if systems else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the scripted oracle teacher (every role) for unified samples.")
    parser.add_argument("--samples", type=Path, default=Path("examples/samples.json"), help="unified samples (JSON)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every reply")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    samples = json.loads(args.samples.read_text())
    teacher = ScriptedTeacher(samples, latency_s=args.latency_s, host=args.host, port=args.port).start()
    logging.getLogger(__name__).info(
        "scripted teacher for %d samples at %s (Ctrl-C to stop)", len(samples), teacher.base_url
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        teacher.stop()


if __name__ == "__main__":
    main()

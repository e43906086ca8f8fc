"""The judge prompt: a versioned template file rendered with the question, reference and candidate answer."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).parent / "prompts"
DEFAULT_TEMPLATE = "judge_v1"
_FIELDS = ("query", "reference_answer", "generated_answer")
_SECTION_TAGS = ("question", "reference", "candidate", "judge")
_TAG_PATTERN = re.compile(r"</?\s*(?:" + "|".join(_SECTION_TAGS) + r")\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    text: str

    def render(self, query: str, reference_answer: str, generated_answer: str) -> str:
        """Fill the template. Section and verdict tags are removed from the inputs so an answer cannot close its own
        section or pre-write a verdict."""
        values = {
            "query": _TAG_PATTERN.sub(" ", query).strip(),
            "reference_answer": _TAG_PATTERN.sub(" ", reference_answer).strip(),
            "generated_answer": _TAG_PATTERN.sub(" ", generated_answer).strip(),
        }
        return string.Template(self.text).substitute(values)


@lru_cache(maxsize=16)
def load_template(name_or_path: str = DEFAULT_TEMPLATE) -> JudgeTemplate:
    """Load `prompts/<name>.txt` shipped with the package, or a template file at an explicit path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        shipped = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise FileNotFoundError(f"judge prompt template {name_or_path!r} not found (shipped templates: {shipped})")
    text = path.read_text(encoding="utf-8")
    identifiers = set(string.Template(text).get_identifiers())
    if identifiers != set(_FIELDS):
        raise ValueError(
            f"judge template {path} must use exactly the placeholders {_FIELDS}, found {sorted(identifiers)}"
        )
    return JudgeTemplate(name=path.stem, text=text)


def extract_sections(prompt: str) -> dict[str, str]:
    """Recover question, reference and candidate from a rendered prompt (used by scripted judge servers)."""
    sections = {}
    for tag in ("question", "reference", "candidate"):
        match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", prompt, re.DOTALL)
        sections[tag] = match.group(1) if match else ""
    return sections

"""The text the agent reads: the system prompt, the question turn and the observation turns, rendered from a template.

The wording lives in a Jinja file (`prompt_templates/unidoc.jinja` by default; `unidoc_agent.prompt_template` names
another one, e.g. the template a released checkpoint was trained with). This module is its only reader: synthesis,
the SFT export, the agent loop, evaluation and the viewer all render through `load_prompts(...)`, so the model sees
one format everywhere. Observations are user turns; images follow the text that names them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from unidoc_rl.env.vision import CoordinateConvention

TEMPLATE_DIR = Path(__file__).parent / "prompt_templates"
DEFAULT_TEMPLATE = "unidoc"

MACROS: dict[str, tuple[str, ...]] = {
    "system": ("n_candidates", "convention"),
    "question": ("query",),
    "results_header": ("query",),
    "image_label": ("index",),
    "unshowable": ("count",),
    "no_new_pages": ("query",),
    "selected_page": ("index",),
    "zoomed_region": (),
    "error": ("message",),
    "search_failed": ("reason",),
    "invalid_action": ("reason", "detail"),
    "note": ("text",),
    "last_turn_note": (),
    "final_answer_request": ("reason",),
}
"""The macros a template defines, with their parameters (the contract documented in the default template)."""

_QUESTION_MARK = "\x00question\x00"


def template_path(name_or_path: str) -> Path:
    """`prompt_templates/<name>.jinja` shipped with the package, or an explicit file path."""
    path = Path(name_or_path).expanduser()
    if not path.suffix:
        path = TEMPLATE_DIR / f"{name_or_path}.jinja"
    if not path.is_file():
        shipped = sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))
        raise FileNotFoundError(f"agent prompt template {name_or_path!r} not found (shipped templates: {shipped})")
    return path.resolve()


@functools.cache
def _load(path: Path) -> AgentPrompts:
    return AgentPrompts(path)


def load_prompts(name_or_path: str = DEFAULT_TEMPLATE) -> AgentPrompts:
    """The agent's texts from a template name or file (each file is read once per process)."""
    return _load(template_path(name_or_path))


class AgentPrompts:
    """The chat turns of one template. Raises ValueError at load when a macro is missing or has other parameters."""

    def __init__(self, path: Path):
        self.path = path
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
        try:
            module = environment.from_string(path.read_text(encoding="utf-8")).module
        except jinja2.TemplateError as error:
            raise ValueError(f"agent prompt template {path}: {error}") from error
        problems = []
        for name, parameters in MACROS.items():
            macro = getattr(module, name, None)
            if not isinstance(macro, jinja2.runtime.Macro):
                problems.append(f"missing macro {name}({', '.join(parameters)})")
            elif tuple(macro.arguments) != parameters:
                found, expected = ", ".join(macro.arguments), ", ".join(parameters)
                problems.append(f"macro {name} takes ({found}), expected ({expected})")
        if problems:
            raise ValueError(f"agent prompt template {path}: " + "; ".join(problems))
        self._module = module
        prefix, _, suffix = self._text("question", query=_QUESTION_MARK).partition(_QUESTION_MARK)
        self._question_affixes = (prefix, suffix)

    @property
    def name(self) -> str:
        return self.path.stem

    def _text(self, macro: str, **values: Any) -> str:
        return str(getattr(self._module, macro)(**values))

    # --- the prompt ---------------------------------------------------------------------------------------------

    def system_prompt(
        self, convention: CoordinateConvention = CoordinateConvention.ABSOLUTE, n_candidates: int = 3
    ) -> str:
        return self._text("system", n_candidates=n_candidates, convention=CoordinateConvention(convention).value)

    def question_message(self, query: str) -> dict[str, Any]:
        """The user turn that asks the question (all an RL sample's prompt carries; the agent adds the system
        prompt)."""
        return {"role": "user", "content": self._text("question", query=query)}

    def question_of(self, messages: list[dict[str, Any]]) -> str:
        """The question of a prompt: its last user turn, without the template's words around the question."""
        text = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        prefix, suffix = self._question_affixes
        if text.startswith(prefix) and text.endswith(suffix) and len(text) >= len(prefix) + len(suffix):
            return text[len(prefix) : len(text) - len(suffix)]
        return text

    def prompt_messages(
        self, query: str, convention: CoordinateConvention = CoordinateConvention.ABSOLUTE, n_candidates: int = 3
    ) -> list[dict[str, Any]]:
        """The whole chat prompt for one question, as the agent renders it for these settings."""
        system = {"role": "system", "content": self.system_prompt(convention, n_candidates)}
        return [system, self.question_message(query)]

    # --- observations -------------------------------------------------------------------------------------------

    def _user(self, parts: list[dict[str, Any]], note: str | None) -> dict[str, Any]:
        if note:
            parts = [*parts, {"type": "text", "text": self._text("note", text=note)}]
        return {"role": "user", "content": parts}

    def search_results(
        self, query: str, pages: list[Image.Image], note: str | None = None, unshowable: int = 0
    ) -> dict[str, Any]:
        """The candidates of one search; `unshowable` counts retrieved new pages that could not be displayed."""
        parts: list[dict[str, Any]] = [{"type": "text", "text": self._text("results_header", query=query)}]
        for index, image in enumerate(pages):
            parts.append({"type": "text", "text": self._text("image_label", index=index)})
            parts.append({"type": "image", "image": image})
        if unshowable:
            parts.append({"type": "text", "text": self._text("unshowable", count=unshowable)})
        return self._user(parts, note)

    def no_new_pages(self, query: str, note: str | None = None) -> dict[str, Any]:
        return self._user([{"type": "text", "text": self._text("no_new_pages", query=query)}], note)

    def selected_page(self, index: int, image: Image.Image, note: str | None = None) -> dict[str, Any]:
        text = self._text("selected_page", index=index)
        return self._user([{"type": "text", "text": text}, {"type": "image", "image": image}], note)

    def cropped_region(self, image: Image.Image, note: str | None = None) -> dict[str, Any]:
        text = self._text("zoomed_region")
        return self._user([{"type": "text", "text": text}, {"type": "image", "image": image}], note)

    def search_failed(self, reason: str, note: str | None = None) -> dict[str, Any]:
        return self._error(self._text("search_failed", reason=reason), note)

    def invalid_action(self, reason: str, detail: str, note: str | None = None) -> dict[str, Any]:
        return self._error(self._text("invalid_action", reason=reason, detail=detail), note)

    def _error(self, message: str, note: str | None) -> dict[str, Any]:
        return self._user([{"type": "text", "text": self._text("error", message=message)}], note)

    @property
    def last_turn_note(self) -> str:
        return self._text("last_turn_note")

    def final_answer_request(self, reason: str) -> dict[str, Any]:
        text = self._text("final_answer_request", reason=reason)
        return {"role": "user", "content": [{"type": "text", "text": text}]}


def message_text(message: dict[str, Any]) -> str:
    """A rendered turn as text, each image as `<image>` (the episode record's and the SFT data's view of it)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else "<image>" for part in content)

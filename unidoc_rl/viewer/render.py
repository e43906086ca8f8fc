"""HTML of the viewer's pages: the episode list, one episode turn by turn, and the run's curves and accuracies."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from html import escape

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.episode_log import JudgeVerdict
from unidoc_rl.viewer.index import BadLine, EpisodeIndex
from unidoc_rl.viewer.query import BUILTIN_SORTS, ListPage, ListQuery, order_components
from unidoc_rl.viewer.records import JUDGE_SOURCES, EpisodeEntry, EpisodeSummary
from unidoc_rl.viewer.run_data import EvalSummary, MetricsLog, accuracy_over_checkpoints
from unidoc_rl.viewer.svg import Series, interval_bar, line_chart
from unidoc_rl.viewer.timeline import FocusView, TurnView

FOCUS_MAX_WIDTH = 520
"""CSS pixels the focus page of a crop is drawn at (or its display width, if smaller)."""
SELECTED_MAX_WIDTH = 380
"""CSS pixels a selected page (no boxes of the model on it) is drawn at."""
QUESTION_CHARS = 140


def e(value) -> str:
    return escape(str(value), quote=True)


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def layout(title: str, body: str, links, run_name: str, active: str) -> str:
    nav = "".join(
        f'<a class="{"active" if name == active else ""}" href="{e(href)}">{label}</a>'
        for name, label, href in (("episodes", "Episodes", links.episodes()), ("run", "Run", links.run()))
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)} · UniDoc-RL viewer</title>"
        f"<link rel='stylesheet' href='{e(links.asset('viewer.css'))}'></head><body>"
        f"<header class='topbar'><span class='brand'>UniDoc-RL viewer</span>"
        f"<span class='run-name' title='{e(run_name)}'>{e(run_name)}</span><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>"
    )


def reward_cell(value: float | None) -> str:
    if value is None:
        return "<td class='num'>–</td>"
    width = max(0.0, min(1.0, value)) * 100
    return (
        f"<td class='num reward-cell'><span class='reward-value'><span class='mini-bar'>"
        f"<span style='width:{width:.0f}%'></span></span>{value:.3f}</span></td>"
    )


def badge(text: str, kind: str) -> str:
    return f"<span class='badge badge-{e(kind)}'>{e(text)}</span>"


def yes_no(value: bool | None) -> str:
    if value is None:
        return "<span class='muted'>–</span>"
    return "<span class='yes'>✓</span>" if value else "<span class='no'>✗</span>"


def bad_lines_note(bad: Sequence[BadLine], index: EpisodeIndex) -> str:
    if not bad:
        return ""
    first = bad[0]
    return (
        f"<div class='note warn'>{len(bad)} line(s) could not be read as episodes and are left out; first: "
        f"{e(index.logs[first.source].label)} line {first.line}: {e(first.reason)}</div>"
    )


# --- the episode list -------------------------------------------------------------------------------------------


def _select(name: str, options: Sequence[tuple[str, str]], current: str, label: str) -> str:
    items = "".join(
        f"<option value='{e(value)}'{' selected' if value == current else ''}>{e(text)}</option>"
        for value, text in options
    )
    return f"<label>{e(label)}<select name='{e(name)}'>{items}</select></label>"


def _input(name: str, value, label: str, kind: str = "text", width: str = "", placeholder: str = "") -> str:
    shown = "" if value is None else value
    style = f" style='width:{width}'" if width else ""
    return (
        f"<label>{e(label)}<input type='{kind}' name='{e(name)}' value='{e(shown)}'{style} "
        f"placeholder='{e(placeholder)}' step='any'></label>"
    )


def filter_form(query: ListQuery, index: EpisodeIndex, links) -> str:
    facets = index.facets
    categories, finishes = facets.categories, facets.finish_reasons
    metrics = ["reward", *facets.components, *facets.evidence]
    parts = [
        _input("text", query.text, "Question contains", width="16em", placeholder="text or uid"),
        _select("finish", [("", "any"), *[(r, r) for r in finishes]], query.finish, "Finish reason"),
        _select("category", [("", "any"), *[(c, c) for c in categories]], query.category, "Category"),
        _select("answered", [("", "any"), ("yes", "yes"), ("no", "no")], query.answered, "Answered"),
        _select("correct", [("", "any"), ("yes", "yes"), ("no", "no")], query.correct, "Correct"),
        "<span class='range'>"
        + _select("metric", [(m, m) for m in metrics], query.metric, "Value")
        + _input("min", query.min, "≥", "number", "5em")
        + _input("max", query.max, "≤", "number", "5em")
        + "</span>",
        "<span class='range'>"
        + _input("step_min", query.step_min, "Step ≥", "number", "5em")
        + _input("step_max", query.step_max, "≤", "number", "5em")
        + "</span>",
    ]
    if len(index.logs) > 1:
        sources = [("", "all"), *[(str(log.number), log.label) for log in index.logs]]
        parts.append(_select("source", sources, "" if query.source is None else str(query.source), "Log"))
    sorts = [*BUILTIN_SORTS, *facets.components, *facets.evidence]
    parts.append(_select("sort", [(s, s) for s in sorts], query.sort, "Sort by"))
    parts.append(_select("order", [("asc", "ascending"), ("desc", "descending")], query.order, "Order"))
    parts.append(_select("per_page", [(str(n), str(n)) for n in (25, 50, 100, 200)], str(query.per_page), "Per page"))
    return (
        f"<form class='filters' method='get' action='/'>{''.join(parts)}"
        f"<span class='actions'><button type='submit'>Apply</button><a href='{e(links.episodes())}'>Reset</a></span>"
        "</form>"
    )


def _sort_header(name: str, label: str, query: ListQuery, links, numeric: bool = True) -> str:
    if links.static_site:
        return f"<th class='{'num' if numeric else ''}'>{e(label)}</th>"
    order = "desc" if query.sort != name or query.order == "asc" else "asc"
    arrow = (" ▲" if query.order == "asc" else " ▼") if query.sort == name else ""
    href = links.episodes(query, sort=name, order=order, page=1)
    return f"<th class='{'num' if numeric else ''}'><a href='{e(href)}'>{e(label)}{arrow}</a></th>"


def episode_list(
    index: EpisodeIndex, rows: Sequence[EpisodeSummary], page: ListPage, query: ListQuery, links, run_name: str
) -> str:
    components = index.facets.components
    evidence = index.facets.evidence
    single_log = len(index.logs) == 1
    header = (
        "<tr>"
        + _sort_header("line", "#", query, links)
        + _sort_header("step", "step", query, links)
        + "<th>question</th>"
        + _sort_header("reward", "reward", query, links)
        + "".join(_sort_header(name, name, query, links) for name in components)
        + "".join(_sort_header(name, name, query, links) for name in evidence)
        + _sort_header("turns", "turns", query, links)
        + "<th>finish</th><th>ans.</th><th>corr.</th><th>category</th></tr>"
    )
    body = []
    for row in page.rows:
        href = links.episode(row.source, row.line)
        question = row.question if len(row.question) <= QUESTION_CHARS else row.question[:QUESTION_CHARS] + "…"
        body.append(
            f"<tr class='episode-row' data-source='{row.source}' data-line='{row.line}'>"
            f"<td class='num'><a href='{e(href)}' title='{e(index.logs[row.source].label)} line {row.line + 1}'>"
            f"{row.line + 1 if single_log else f'{row.source}:{row.line + 1}'}</a></td>"
            f"<td class='num'>{'' if row.step is None else row.step}</td>"
            f"<td class='question'><a href='{e(href)}' title='{e(row.uid)}'>"
            f"{e(question) or '<i>no question</i>'}</a></td>"
            + reward_cell(row.reward)
            + "".join(f"<td class='num'>{num(row.components.get(name), 2)}</td>" for name in components)
            + "".join(f"<td class='num'>{num(row.evidence.get(name), 2)}</td>" for name in evidence)
            + f"<td class='num'>{row.num_turns}</td>"
            f"<td>{badge(row.finish_reason, row.finish_reason)}"
            f"{' ' + badge('forced', 'forced') if row.forced else ''}</td>"
            f"<td>{yes_no(row.answered)}</td><td>{yes_no(row.correct)}</td>"
            f"<td class='cats'>{'<br>'.join(e(c) for c in row.categories)}</td></tr>"
        )
    if not page.rows:
        body.append(
            f"<tr><td colspan='{9 + len(components) + len(evidence)}' class='empty'>"
            "No episode matches these filters.</td></tr>"
        )
    start = (page.page - 1) * query.per_page + 1 if page.total else 0
    end = start + len(page.rows) - 1 if page.total else 0
    count = (
        f"<p class='count' id='match-count' data-total='{page.total}'>Episodes {start}–{end} of "
        f"<b>{page.total:,}</b> matching ({len(rows):,} in the run)</p>"
    )
    html = (
        ("" if links.static_site else filter_form(query, index, links))
        + bad_lines_note(index.bad_lines, index)
        + count
        + pager(page, query, links)
        + f"<div class='table-wrap'><table class='episodes'><thead>{header}</thead><tbody>{''.join(body)}</tbody>"
        "</table></div>" + pager(page, query, links)
    )
    return layout("Episodes", html, links, run_name, "episodes")


def pager(page: ListPage, query: ListQuery, links) -> str:
    if page.pages <= 1:
        return ""

    def go(number: int, label: str) -> str:
        if number < 1 or number > page.pages or number == page.page:
            return f"<span class='disabled'>{label}</span>"
        return f"<a href='{e(links.episodes(query, page=number))}'>{label}</a>"

    return (
        f"<nav class='pager'>{go(1, '« first')}{go(page.page - 1, '‹ prev')}"
        f"<span class='current'>page {page.page} of {page.pages:,}</span>"
        f"{go(page.page + 1, 'next ›')}{go(page.pages, 'last »')}</nav>"
    )


# --- one episode ------------------------------------------------------------------------------------------------


def _verdict_text(verdict: JudgeVerdict | None) -> str:
    if verdict is None:
        return "–"
    return f"{verdict.score:g} ({verdict.source}{', fallback' if verdict.fallback else ''})"


def _judge_note(entry: EpisodeEntry) -> str | None:
    """How the answer reward was scored, worded so that it never contradicts the verdict beside it."""
    reward = entry.line.reward
    if reward is None:
        return None
    if reward.judge_called:
        how = "fallback" if reward.judge_fallback else ("cached" if reward.judge_cached else "called")
        return f"answer reward: judge {how}"
    verdict = entry.line.judge
    if verdict is not None and verdict.source in JUDGE_SOURCES:
        return "answer reward: judge not asked by the reward (the verdict was asked for accuracy)"
    return "answer reward: judge not called"


def _component_rows(entry: EpisodeEntry) -> str:
    names = order_components(entry.components)
    rows = (
        [
            f"<tr class='total'><th>reward</th><td>{interval_bar(entry.reward or 0.0, None, None)}</td>"
            f"<td class='num'>{num(entry.reward)}</td></tr>"
        ]
        if entry.reward is not None
        else []
    )
    for name in names:
        value = entry.components[name]
        rows.append(
            f"<tr data-component='{e(name)}'><th>{e(name)}</th><td>{interval_bar(value, None, None)}</td>"
            f"<td class='num'>{num(value)}</td></tr>"
        )
    notes = [note] if (note := _judge_note(entry)) else []
    if entry.components.get("search_failures"):
        notes.append(f"failed searches: {entry.components['search_failures']:g}")
    if entry.components.get("forced_answer"):
        notes.append("answer given in a forced final turn")
    evidence = "".join(
        f"<tr data-evidence='{e(name)}'><th>{e(name)}</th><td>{interval_bar(value, None, None)}</td>"
        f"<td class='num'>{num(value)}</td></tr>"
        for name, value in entry.evidence.items()
    )
    return (
        f"<table class='components'><caption>reward components</caption>{''.join(rows)}</table>"
        f"<p class='muted small'>{e(' · '.join(notes))}</p>"
        + (f"<table class='components'><caption>evidence metrics</caption>{evidence}</table>" if evidence else "")
    )


def episode_page(
    entry: EpisodeEntry,
    timeline: list[TurnView],
    source: int,
    line: int,
    index: EpisodeIndex,
    pages,
    links,
    run_name: str,
) -> str:
    record = entry.record
    before, after = index.neighbours(source, line)
    nav = (
        f"<nav class='episode-nav'><a href='{e(links.episodes())}'>← all episodes</a>"
        + (f"<a href='{e(links.episode(before.source, before.line))}'>‹ previous</a>" if before else "")
        + (f"<a href='{e(links.episode(after.source, after.line))}'>next ›</a>" if after else "")
        + f"<span class='muted'>{e(index.logs[source].label)} line {line + 1}</span></nav>"
    )
    answer = (
        f"<span class='answer-text'>{e(record.answer)}</span>"
        + (" " + badge("forced", "forced") if record.forced_answer else "")
        if record.answer is not None
        else "<span class='muted'>no answer</span>"
    )
    facts = [
        (
            "reference answer",
            e(entry.reference_answer)
            if entry.reference_answer is not None
            else "<span class='muted'>not recorded</span>",
        ),
        ("model answer", answer),
        ("judge verdict", e(_verdict_text(entry.verdict))),
        ("correct", yes_no(entry.correct)),
        ("finish reason", badge(str(record.finish_reason or "unfinished"), str(record.finish_reason or "unfinished"))),
        ("turns", f"{record.num_turns} ({record.invalid_actions} invalid)"),
    ]
    native = {name: value for name, value in (entry.line.native or {}).items() if isinstance(value, int | float)}
    if native:
        scores = ", ".join(f"{e(name)}: {num(float(value))}" for name, value in native.items())
        facts.append(("benchmark scores", scores))
    if entry.step is not None:
        facts.append(("step", str(entry.step)))
    facts.append(("uid", f"<code>{e(record.uid)}</code>"))
    if entry.categories:
        facts.append(("categories", "<br>".join(e(c) for c in entry.categories)))
    if entry.ground_truth and entry.ground_truth.gold_page_ids:
        facts.append(("gold pages", ", ".join(f"<code>{e(p)}</code>" for p in entry.ground_truth.gold_page_ids)))
    fact_rows = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
    summary = (
        f"<section class='card summary'><h1 class='question'>{e(record.question) or '<i>no question recorded</i>'}</h1>"
        f"<div class='summary-grid'><table class='facts'>{fact_rows}</table>{_component_rows(entry)}</div></section>"
    )
    toggles = (
        "<div class='toggles'>Show on pages: "
        "<label><input type='checkbox' id='show-model' checked> <span class='swatch model'></span>model boxes</label>"
        "<label><input type='checkbox' id='show-gold' checked> <span class='swatch gold'></span>gold boxes</label>"
        "<label><input type='checkbox' id='show-region' checked> <span class='swatch region'></span>cropped region"
        "</label></div>"
    )
    turns = "".join(turn_card(view, entry, source, line, pages, links) for view in timeline)
    raw = json.dumps(entry.line.to_dict(), indent=1, default=str)
    html = (
        nav
        + summary
        + toggles
        + f"<section class='turns' data-turns='{len(timeline)}'>{turns}</section>"
        + f"<details class='card raw'><summary>Raw record</summary><pre>{e(raw)}</pre></details>"
    )
    return layout(record.question[:60] or "Episode", f"<div class='episode'>{html}</div>", links, run_name, "episodes")


def turn_card(view: TurnView, entry: EpisodeEntry, source: int, line: int, pages, links) -> str:
    kind = view.kind.value
    head = f"<header><span class='turn-number'>Turn {view.number}</span>{badge(kind, kind)}"
    if view.turn.forced:
        head += badge("forced final answer", "forced")
    advantage = turn_advantage(entry, view.number - 1)
    if advantage is not None:
        head += (
            f"<span class='badge advantage' title='mean advantage of this turn&#39;s tokens'>A {advantage:+.3f}</span>"
        )
    head += "</header>"
    parts = [head]
    if view.thinking:
        parts.append(f"<div class='thinking'><span class='label'>thinking</span><pre>{e(view.thinking)}</pre></div>")
    if view.action_text:
        parts.append(f"<pre class='action-text'>{e(view.action_text)}</pre>")
    if view.kind is ActionKind.INVALID and view.turn.detail:
        parts.append(f"<div class='error'><b>invalid action</b> — {e(view.turn.detail)}</div>")
    if view.search is not None:
        parts.append(search_block(view, pages, links))
    if view.focus is not None:
        parts.append(focus_block(view.focus, view.kind, source, line, pages, links))
    elif view.focus_missing:
        parts.append(f"<div class='note'>{e(view.focus_missing)}</div>")
    if view.kind is ActionKind.ANSWER and entry.record.answer is not None:
        parts.append(f"<div class='final-answer'>answer: <b>{e(entry.record.answer)}</b></div>")
    if view.turn.observation is not None:
        css = "observation error-observation" if view.kind is ActionKind.INVALID else "observation"
        parts.append(
            f"<div class='{css}'><span class='label'>observation</span><pre>{e(view.turn.observation)}</pre></div>"
        )
    style = f" style='{advantage_style(advantage)}' data-advantage='{advantage:.6f}'" if advantage is not None else ""
    return (
        f"<article class='turn card turn-{kind}' data-kind='{kind}' id='turn-{view.number}'{style}>"
        f"{''.join(parts)}</article>"
    )


def turn_advantage(entry: EpisodeEntry, index: int) -> float | None:
    """The training log's advantage of the turn (`turn_advantages`, aligned with the record's turns), if any."""
    values = entry.line.turn_advantages
    return values[index] if values is not None and 0 <= index < len(values) else None


def advantage_style(advantage: float) -> str:
    """A turn's colour by its advantage: green above 0, red below, stronger with |advantage| (full at 1)."""
    strength = min(abs(advantage), 1.0)
    rgb = "22, 163, 74" if advantage > 0 else "220, 38, 38"
    border, tint = 0.25 + 0.75 * strength, 0.12 * strength
    return f"border-left: 6px solid rgba({rgb}, {border:.2f}); background: rgba({rgb}, {tint:.3f})"


def _page_image(page_id: str, pages, links, thumb: bool, attrs: str = "") -> str:
    if not pages.exists(page_id):
        return f"<div class='missing-image' {attrs}>page image not found<br><code>{e(page_id)}</code></div>"
    src = links.thumb(page_id) if thumb else links.page(page_id)
    return f"<img src='{e(src)}' alt='{e(page_id)}' loading='lazy' {attrs}>"


def search_block(view: TurnView, pages, links) -> str:
    step = view.search
    head = f"<div class='search-query'>search #{view.search_number}: <q>{e(step.query)}</q></div>"
    if step.failed:
        return head + f"<div class='error'><b>search failed</b> — {e(step.error or 'no detail')}</div>"
    cards = []
    for candidate in view.candidates:
        classes = ["candidate"] + (["selected"] if candidate.selected else []) + (["gold"] if candidate.gold else [])
        marks = (badge("selected", "selected") if candidate.selected else "") + (
            badge("gold", "gold") if candidate.gold else ""
        )
        rank = f"rank {candidate.rank}" if candidate.rank is not None else "rank ?"
        score = f" · score {candidate.score:.3f}" if candidate.score is not None else ""
        cards.append(
            f"<figure class='{' '.join(classes)}' data-page='{e(candidate.page_id)}'>"
            f"<a href='{e(links.page(candidate.page_id))}' target='_blank'>"
            f"{_page_image(candidate.page_id, pages, links, thumb=True, attrs='class=thumb')}</a>"
            f"<figcaption><b>Image {candidate.position}</b> {marks}<br><code>{e(candidate.page_id)}</code><br>"
            f"<span class='muted'>{rank}{score}</span></figcaption></figure>"
        )
    if not cards:
        cards.append("<p class='muted'>no new pages (every result was shown before)</p>")
    retrieved = ""
    if step.retrieved:
        items = "".join(
            f"<li class='{'shown' if page_id in step.candidates else ''}'><code>{e(page_id)}</code>"
            + (f" {step.scores[rank]:.3f}" if rank < len(step.scores) else "")
            + "</li>"
            for rank, page_id in enumerate(step.retrieved)
        )
        retrieved = (
            f"<details class='retrieved'><summary>engine results ({len(step.retrieved)})</summary>"
            f"<ol>{items}</ol></details>"
        )
    return head + f"<div class='candidates'>{''.join(cards)}</div>" + retrieved


def _rects(boxes, css: str) -> str:
    return "".join(
        f"<rect class='{css}' x='{x1:.2f}' y='{y1:.2f}' width='{max(x2 - x1, 0):.2f}' height='{max(y2 - y1, 0):.2f}' "
        f"data-box='{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}'/>"
        for x1, y1, x2, y2 in boxes
    )


def focus_block(focus: FocusView, kind: ActionKind, source: int, line: int, pages, links) -> str:
    dw, dh = focus.display_size
    rw, rh = focus.raw_size
    shown_w = min(dw, FOCUS_MAX_WIDTH if kind is ActionKind.BBOX else SELECTED_MAX_WIDTH)
    overlay = (
        f"<svg class='overlay' viewBox='0 0 {dw} {dh}' preserveAspectRatio='none'>"
        + _rects(focus.gold_boxes, "box-gold")
        + _rects(focus.crop_regions, "box-region")
        + _rects(focus.model_boxes, "box-model")
        + "</svg>"
    )
    image = _page_image(focus.page_id, pages, links, thumb=False, attrs="class='page-image'")
    caption = (
        f"<figcaption>{'selected page' if kind is ActionKind.SELECT else 'focus page'} "
        f"<code>{e(focus.page_id)}</code> · "
        f"shown to the model at {dw}×{dh} (raw {rw}×{rh})</figcaption>"
    )
    figure = (
        f"<figure class='focus' data-page='{e(focus.page_id)}' data-display='{dw},{dh}'>"
        f"<div class='page-frame' style='width:{shown_w}px'>{image}{overlay}</div>{caption}</figure>"
    )
    crop = ""
    if focus.crop is not None and pages.exists(focus.page_id):
        search_index, crop_index = focus.crop
        made = focus.recomputed_size
        caption = f"zoomed crop as the model got it ({made[0]}×{made[1]})" if made else "zoomed crop"
        if focus.zoom_size and made and tuple(focus.zoom_size) != tuple(made):
            caption = (
                f"<span class='warn-text'>zoomed crop recomputed at {made[0]}×{made[1]}, but the model was shown "
                f"{focus.zoom_size[0]}×{focus.zoom_size[1]}: pass the run's --min-pixels/--max-pixels</span>"
            )
        src = links.crop(source, line, search_index, crop_index)
        crop = (
            f"<figure class='zoom'><img class='crop-image' src='{e(src)}' alt='zoomed crop'>"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return f"<div class='focus-row'>{figure}{crop}</div>"


# --- the run ----------------------------------------------------------------------------------------------------


def run_page(
    metrics: MetricsLog, summaries: list[EvalSummary], rows: Sequence[EpisodeSummary], links, run_name: str
) -> str:
    parts = ["<h1>Run</h1>"]
    groups = metrics.groups()
    if groups:
        charts = "".join(
            f"<div class='chart-card'>{line_chart(title, [Series(n, p) for n, p in series.items()])}</div>"
            for title, series in groups
        )
        parts.append(f"<section><h2>Training curves</h2><div class='charts'>{charts}</div></section>")
    else:
        parts.append("<p class='muted'>No metrics.jsonl in this run.</p>")
    if metrics.bad_lines:
        parts.append(
            f"<div class='note warn'>metrics.jsonl: {len(metrics.bad_lines)} unreadable line(s); "
            f"first: {e(metrics.bad_lines[0])}</div>"
        )
    if summaries:
        parts.append(eval_section(summaries))
    if rows:
        parts.append(episode_stats(rows))
    return layout("Run", "".join(parts), links, run_name, "run")


def eval_section(summaries: list[EvalSummary]) -> str:
    parts = ["<section><h2>Evaluation</h2>"]
    over = accuracy_over_checkpoints(summaries)
    if len({s.step for s in summaries if s.step is not None}) >= 2:
        by_benchmark: dict[str, list[Series]] = defaultdict(list)
        for label, points in over.items():
            by_benchmark[label.split(" / ")[0]].append(Series(label, points))
        charts = "".join(
            f"<div class='chart-card'>{line_chart(f'accuracy: {name}', series, x_label='checkpoint step')}</div>"
            for name, series in by_benchmark.items()
        )
        parts.append(f"<div class='charts'>{charts}</div>")
    for position, summary in enumerate(reversed(summaries)):
        title = f"{summary.label}" + (f" (step {summary.step})" if summary.step is not None else "")
        if summary.error:
            parts.append(f"<div class='note warn'>{e(title)}: {e(summary.error)}</div>")
            continue
        rate_names = sorted({name for row in summary.rows for name in row.rates})
        header = (
            "<tr><th>benchmark / category</th><th>accuracy (95% CI)</th><th class='num'>n</th>"
            + "".join(f"<th class='num'>{e(name)}</th>" for name in rate_names)
            + "</tr>"
        )
        body = "".join(
            f"<tr><td>{e(row.label)}</td><td class='acc'>{interval_bar(row.accuracy, row.low, row.high)} "
            f"{row.accuracy * 100:.1f}%"
            + (
                f" <span class='muted'>[{row.low * 100:.1f}, {row.high * 100:.1f}]</span>"
                if row.low is not None
                else ""
            )
            + f"</td><td class='num'>{'' if row.count is None else row.count}</td>"
            + "".join(f"<td class='num'>{num(row.rates.get(name), 3)}</td>" for name in rate_names)
            + "</tr>"
            for row in summary.rows
        )
        opened = " open" if position == 0 else ""
        parts.append(
            f"<details class='card eval-summary'{opened}><summary>{e(title)}</summary>"
            f"<div class='table-wrap'><table class='accuracy'>{header}{body}</table></div></details>"
        )
    parts.append("</section>")
    return "".join(parts)


def episode_stats(rows: Sequence[EpisodeSummary]) -> str:
    finishes = Counter(row.finish_reason for row in rows)
    by_category: dict[str, list[EpisodeSummary]] = defaultdict(list)
    for row in rows:
        for label in row.categories or ("(no category)",):
            by_category[label].append(row)

    def rate(items, attribute) -> str:
        known = [getattr(row, attribute) for row in items if getattr(row, attribute) is not None]
        return f"{100 * sum(known) / len(known):.1f}%" if known else "–"

    def mean_reward(items) -> str:
        values = [row.reward for row in items if row.reward is not None]
        return num(sum(values) / len(values)) if values else "–"

    finish_rows = "".join(
        f"<tr><td>{badge(name, name)}</td><td class='num'>{count:,}</td>"
        f"<td class='num'>{100 * count / len(rows):.1f}%</td></tr>"
        for name, count in finishes.most_common()
    )
    category_rows = "".join(
        f"<tr><td>{e(label)}</td><td class='num'>{len(items):,}</td><td class='num'>{rate(items, 'answered')}</td>"
        f"<td class='num'>{rate(items, 'correct')}</td><td class='num'>{mean_reward(items)}</td></tr>"
        for label, items in sorted(by_category.items())
    )
    return (
        "<section><h2>Episodes in the logs</h2><div class='stats'>"
        "<table><tr><th>finish reason</th><th class='num'>episodes</th><th class='num'>share</th></tr>"
        f"{finish_rows}</table>"
        "<table><tr><th>category</th><th class='num'>episodes</th><th class='num'>answered</th>"
        f"<th class='num'>correct</th><th class='num'>mean reward</th></tr>{category_rows}</table>"
        "</div></section>"
    )


def error_page(status: int, message: str, links, run_name: str) -> str:
    return layout(f"{status}", f"<div class='note warn'><b>{status}</b> {e(message)}</div>", links, run_name, "")

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unidoc_rl.env.actions import (
    CLOSING_FORMS,
    STOP_STRINGS,
    AnswerAction,
    BBoxAction,
    InvalidAction,
    InvalidReason,
    SearchAction,
    SelectAction,
    first_closing_end,
    format_action,
    parse_action,
)
from unidoc_rl.env.episode import ActionKind


def test_each_action_with_think_and_surrounding_text():
    assert parse_action("<think>look it up</think> <search> annual  revenue\n2023 </search>") == SearchAction(
        "annual revenue 2023"
    )
    assert parse_action("I pick the second.<select> 1 </select>") == SelectAction(1)
    assert parse_action("<BBOX>[10, 20.5, 30, 40]</Bbox> done") == BBoxAction(((10.0, 20.5, 30.0, 40.0),))
    assert parse_action("<bbox>[[0,0,5,5], [1.5, 2, 3, 4]]</bbox>") == BBoxAction(
        ((0.0, 0.0, 5.0, 5.0), (1.5, 2.0, 3.0, 4.0))
    )
    assert parse_action("<think>x</think><answer> 42 million </answer>") == AnswerAction("42 million")
    assert parse_action("< answer >yes</ answer>").kind is ActionKind.ANSWER
    assert parse_action("<Search>q</Search >") == SearchAction("q")


def test_first_action_wins_and_actions_inside_think_are_ignored():
    assert parse_action("<think><answer>no</answer></think><search>q</search>") == SearchAction("q")
    assert parse_action("<select>0</select><answer>x</answer>") == SelectAction(0)


def test_invalid_reasons():
    cases = {
        "just prose": InvalidReason.NO_ACTION,
        "": InvalidReason.NO_ACTION,
        "<search>unclosed": InvalidReason.UNCLOSED_TAG,
        "<search>a <answer>b</answer></search>": InvalidReason.NESTED_TAG,
        "<answer>   </answer>": InvalidReason.EMPTY_ARGUMENT,
        "<select>one</select>": InvalidReason.BAD_INDEX,
        "<select>-1</select>": InvalidReason.BAD_INDEX,
        "<select>1.0</select>": InvalidReason.BAD_INDEX,
        "<bbox>[1,2,3]</bbox>": InvalidReason.BAD_BOX,
        "<bbox>1,2,3,4</bbox>": InvalidReason.BAD_BOX,
        "<bbox>[1,2,3,nan]</bbox>": InvalidReason.BAD_BOX,
        "<bbox>[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]</bbox>": InvalidReason.TOO_MANY_BOXES,
    }
    for text, reason in cases.items():
        parsed = parse_action(text)
        assert isinstance(parsed, InvalidAction), text
        assert parsed.reason is reason, (text, parsed)
        assert parsed.kind is ActionKind.INVALID


def test_every_stop_string_closes_its_action_and_nothing_else_does():
    for tag, forms in CLOSING_FORMS.items():
        opening = {"search": "<search>q", "select": "<select>1", "bbox": "<bbox>[1,2,3,4]", "answer": "<answer>a"}[tag]
        for form in forms:
            assert form in STOP_STRINGS
            assert parse_action(opening + form).kind is ActionKind(tag), form
            assert first_closing_end(opening + form + " <answer>b</answer>") == len(opening + form)
    assert set(STOP_STRINGS) == {form for forms in CLOSING_FORMS.values() for form in forms}
    for unaccepted in ("</search  >", "</sEarch>", "< /search>", "</ search >"):
        assert parse_action("<search>q" + unaccepted).reason is InvalidReason.UNCLOSED_TAG, unaccepted
        assert first_closing_end("<search>q" + unaccepted) is None, unaccepted


def test_select_and_boxes_take_ascii_digits_only():
    assert parse_action("<select>\u0663</select>").reason is InvalidReason.BAD_INDEX  # Arabic-Indic three
    assert parse_action("<select>\uff13</select>").reason is InvalidReason.BAD_INDEX  # fullwidth three
    assert parse_action("<bbox>[1,2,3,\u0664]</bbox>").reason is InvalidReason.BAD_BOX
    assert parse_action("<select>3</select>") == SelectAction(3)


@given(st.text())
def test_never_raises_on_any_text(text):
    parsed = parse_action(text)
    assert parsed.kind in set(ActionKind)


tag_soup = st.lists(
    st.sampled_from(
        [
            "<search>",
            "</search>",
            "<select>",
            "</select>",
            "<bbox>",
            "</bbox>",
            "<answer>",
            "</answer>",
            "<think>",
            "</think>",
            "[",
            "]",
            ",",
            "1",
            "-2.5",
            " ",
            "\n",
            "x",
            "<",
            ">",
            "/",
        ]
    ),
    max_size=30,
).map("".join)


@given(tag_soup)
def test_never_raises_on_tag_soup(text):
    parsed = parse_action(text)
    if isinstance(parsed, SelectAction):
        assert parsed.index >= 0
    if isinstance(parsed, BBoxAction):
        assert all(len(box) == 4 for box in parsed.boxes)


@given(st.integers(min_value=0, max_value=999_999), st.text(alphabet=" \t\n", max_size=3))
def test_select_round_trip(index, space):
    assert parse_action(f"<select>{space}{index}{space}</select>") == SelectAction(index)


@given(st.lists(st.tuples(*[st.integers(-5000, 5000)] * 4), min_size=1, max_size=4))
def test_bbox_round_trip(boxes):
    body = str([list(box) for box in boxes]) if len(boxes) > 1 else str(list(boxes[0]))
    assert parse_action(f"<bbox>{body}</bbox>") == BBoxAction(tuple(tuple(float(v) for v in box) for box in boxes))


# --- format_action: what every producer of model text writes -------------------------------------------------

_WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="<>"))
_NORMAL_TEXT = st.lists(_WORDS.filter(bool), min_size=1, max_size=6).map(" ".join)
_FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
_ACTIONS = st.one_of(
    _NORMAL_TEXT.map(SearchAction),
    _NORMAL_TEXT.map(AnswerAction),
    st.integers(min_value=0, max_value=999_999).map(SelectAction),
    st.lists(st.tuples(_FINITE, _FINITE, _FINITE, _FINITE), min_size=1, max_size=4).map(
        lambda boxes: BBoxAction(tuple(boxes))
    ),
)


@given(_ACTIONS, st.one_of(st.none(), _NORMAL_TEXT))
def test_parsing_a_formatted_action_gives_it_back(action, think):
    assert parse_action(format_action(action, think=think)) == action


def test_formatted_actions_read_as_the_grammar_writes_them():
    assert format_action(SearchAction("annual revenue"), think="find it") == (
        "<think>find it</think><search>annual revenue</search>"
    )
    assert format_action(SelectAction(2)) == "<select>2</select>"
    assert format_action(BBoxAction(((10.0, 20.5, 300.0, 400.0),))) == "<bbox>[10, 20.5, 300, 400]</bbox>"
    assert format_action(BBoxAction(((1e-7, 0, 1, 1), (2, 2, 3, 3)))) == (
        "<bbox>[[0.0000001, 0, 1, 1], [2, 2, 3, 3]]</bbox>"
    )
    assert format_action(AnswerAction("42 million")) == "<answer>42 million</answer>"


@pytest.mark.parametrize(
    ("action", "think", "problem"),
    [
        (InvalidAction(InvalidReason.BAD_BOX, "x"), None, "no text form"),
        (SearchAction("  "), None, "non-empty argument"),
        (AnswerAction("see <answer>x</answer>"), None, "holds a tag"),
        (AnswerAction("a </search> b"), None, "holds a tag"),
        (SearchAction("q <think>x</think>"), None, "holds a tag"),
        (SearchAction("q"), "I will <search>q</search>", "think text holds a tag"),
        (BBoxAction(((0, 0, float("inf"), 1),)), None, "finite"),
        (BBoxAction(()), None, "at least one box"),
        (SelectAction(-1), None, "non-negative"),
    ],
)
def test_format_action_refuses_what_would_not_parse_back(action, think, problem):
    with pytest.raises(ValueError, match=problem):
        format_action(action, think=think)

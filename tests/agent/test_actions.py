from hypothesis import given
from hypothesis import strategies as st

from unidoc_rl.actions import (
    STOP_STRINGS,
    AnswerAction,
    BBoxAction,
    InvalidAction,
    InvalidReason,
    SearchAction,
    SelectAction,
    parse_action,
)
from unidoc_rl.episode import ActionKind


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
    assert parse_action("< answer >yes</ answer >").kind is ActionKind.ANSWER


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


def test_stop_strings_are_the_closing_tags():
    assert STOP_STRINGS == ("</search>", "</select>", "</bbox>", "</answer>")


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

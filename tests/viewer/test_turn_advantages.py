"""The episode page colours each model turn of a training trajectory by its advantage (`turn_advantages`, written by
the unidoc_sync trainer beside the record, aligned with its turns)."""

import json

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.episode_log import EpisodeLogLine
from unidoc_rl.viewer.app import Viewer, ViewerSettings
from unidoc_rl.viewer.links import ServerLinks
from unidoc_rl.viewer.render import advantage_style


def test_turns_are_coloured_by_their_advantage(tmp_path):
    episode = {
        "uid": "q1",
        "question": "Q?",
        "turns": [
            {"text": "<search>revenue</search>", "action": "search", "observation": "Image 0"},
            {"text": "<answer>7</answer>", "action": "answer"},
        ],
        "actions": ["search", "answer"],
        "answer": "7",
        "finish_reason": "answered",
        "num_turns": 2,
    }
    run = tmp_path / "run"
    run.mkdir()
    line = EpisodeLogLine(
        uid="q1", episode=EpisodeRecord.from_dict(episode), step=1, group="g", turn_advantages=[-0.5, 0.25]
    )
    (run / "trajectories.jsonl").write_text(json.dumps(line.to_dict()) + "\n")
    page = Viewer(ViewerSettings(run_dir=run)).episode_html(0, 0, ServerLinks())
    assert "data-advantage='-0.500000'" in page and "A -0.500" in page
    assert "data-advantage='0.250000'" in page and "A +0.250" in page
    # Red below 0, green above, stronger with |advantage|.
    assert (
        advantage_style(-0.5) == "border-left: 6px solid rgba(220, 38, 38, 0.62); background: rgba(220, 38, 38, 0.060)"
    )
    assert (
        advantage_style(2.0) == "border-left: 6px solid rgba(22, 163, 74, 1.00); background: rgba(22, 163, 74, 0.120)"
    )

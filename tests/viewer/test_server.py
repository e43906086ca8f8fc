"""The HTTP server on loopback (real sockets): routes, errors, and that nothing outside the run and index is served."""

import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from PIL import Image

from unidoc_rl.viewer.__main__ import main
from unidoc_rl.viewer.app import Viewer, ViewerSettings
from unidoc_rl.viewer.images import resolve_pages_dir
from unidoc_rl.viewer.server import serve_in_thread
from unidoc_rl.viewer.static_site import MARKER, ExportError, export_site


def get(url: str, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Host": host} if host else {}
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_pages_and_images_are_served(server_url, fixture_run):
    status, headers, body = get(server_url, "/?finish=max_turns")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert body.count(b"class='episode-row'") == 1 and b"data-line='5'" in body
    status, _, body = get(server_url, "/episode/0/0")
    assert status == 200 and body.count(b"<article class='turn") == 4
    status, headers, body = get(server_url, "/page/northwind_annual_report_2023_2.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body == (fixture_run.pages_dir / "northwind_annual_report_2023_2.png").read_bytes()
    status, _, body = get(server_url, "/thumb/northwind_annual_report_2023_2.png")
    assert status == 200 and Image.open(io.BytesIO(body)).width == 220
    status, _, body = get(server_url, "/crop/0/0/0/0.png")
    zoom = fixture_run.training[0].record.searches[0].crops[0].zoom_size
    assert status == 200 and Image.open(io.BytesIO(body)).size == zoom
    status, _, body = get(server_url, "/run")
    assert status == 200 and body.count(b'<svg class="chart"') >= 8


@pytest.mark.parametrize(
    "path",
    [
        "/page/..%2F..%2Frun%2Fmetrics.png",
        "/page/%2E%2E%2Fpages%2Fnorthwind_annual_report_2023_2.png",
        "/page/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd.png",
        "/page/%2Fetc%2Fpasswd.png",
        "/thumb/..%2Fdataset.png",
        "/static/..%2Fapp.py",
        "/static/app.py",
        "/trajectories.jsonl",
        "/run/metrics.jsonl",
        "/../../etc/passwd",
        "/episode/0/999",
        "/episode/7/0",
        "/crop/0/0/5/0.png",
    ],
)
def test_nothing_outside_the_run_and_index_is_served(server_url, path):
    status, _, body = get(server_url, path)
    assert status == 404, body[:200]
    assert b"root:" not in body and b"train/reward" not in body


def test_a_symlink_out_of_the_pages_folder_is_refused(fixture_run, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (10, 10)).save(secret)
    link = fixture_run.pages_dir / "leak_1.png"
    os.symlink(secret, link)
    try:
        viewer = Viewer(ViewerSettings(run_dir=fixture_run.run_dir, pages_dir=fixture_run.pages_dir))
        server, url = serve_in_thread(viewer)
        try:
            assert get(url, "/page/leak_1.png")[0] == 404
            assert get(url, "/page/northwind_annual_report_2023_1.png")[0] == 200
        finally:
            server.shutdown()
            server.server_close()
    finally:
        link.unlink()


def test_bad_requests_get_clear_errors(server_url):
    status, _, body = get(server_url, "/?min=lots")
    assert status == 400 and b"min=&#x27;lots&#x27; is not a number" in body
    assert get(server_url, "/", method="POST")[0] == 405
    status, _, body = get(server_url, "/", host="evil.example:8765")
    assert status == 421 and b"loopback" in body
    assert get(server_url, "/", host="localhost:1234")[0] == 200


def test_static_export_writes_every_page_and_the_images_they_show(viewer, tmp_path):
    out = tmp_path / "site"
    assert export_site(viewer, out) == 8
    assert (out / MARKER).is_file() and (out / "run.html").is_file()
    episode_pages = sorted(path.name for path in (out / "episodes").iterdir())
    assert episode_pages == [f"0-{n}.html" for n in range(6)] + ["1-0.html", "1-1.html"]
    for page in [out / "index.html", *(out / "episodes").iterdir()]:
        for target in re.findall(r"(?:src|href)='([^'#?]+)'", page.read_text()):
            assert (page.parent / target).resolve().exists(), (page.name, target)
    assert "northwind_annual_report_2023_2" in (out / "episodes" / "0-0.html").read_text()
    assert export_site(viewer, out) == 8  # a previous export is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a viewer export"):
        export_site(viewer, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_command_line(fixture_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--index-dir" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "site"
    args = [str(fixture_run.run_dir), "--index-dir", str(fixture_run.dataset_dir), "--out", str(out)]
    assert main([*args, "--max-episodes", "3"]) == 0
    assert len(list((out / "episodes").iterdir())) == 3
    assert "8 episodes" in capsys.readouterr().out


def test_index_dir_may_name_the_dataset_the_index_or_the_pages(fixture_run, tmp_path):
    pages = fixture_run.pages_dir.resolve()
    assert resolve_pages_dir(fixture_run.dataset_dir) == pages
    assert resolve_pages_dir(pages) == pages
    index_dir = fixture_run.dataset_dir / "index"
    index_dir.mkdir(exist_ok=True)
    (index_dir / "manifest.json").write_text("{}")
    assert resolve_pages_dir(index_dir) == pages
    with pytest.raises(FileNotFoundError, match="no page images"):
        resolve_pages_dir(tmp_path)


def test_model_text_is_escaped(tmp_path):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    episode = {
        "uid": "x' onmouseover='alert(3)",
        "question": hostile,
        "turns": [{"text": f"<think>{hostile}</think><answer>{hostile}</answer>", "action": "answer"}],
        "actions": ["answer"],
        "answer": hostile,
        "finish_reason": "answered",
        "num_turns": 1,
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(
        json.dumps(
            {
                "schema": 1,
                "uid": hostile,
                "episode": episode,
                "benchmark": hostile,
                "categories": {hostile: [hostile]},
                "judge": {"score": 0.0, "fallback": False, "source": hostile},
            }
        )
        + "\n"
    )
    server, url = serve_in_thread(Viewer(ViewerSettings(run_dir=run)))
    try:
        for path in ("/", "/episode/0/0", "/run"):
            status, _, body = get(url, path)
            assert status == 200
            assert b"<script" not in body and b"<img src=x" not in body and b"' onmouseover='" not in body
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in get(url, "/episode/0/0")[2]
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_serves_on_loopback_until_stopped(fixture_run):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unidoc_rl.viewer",
            str(fixture_run.run_dir),
            "--index-dir",
            str(fixture_run.dataset_dir),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        # Ctrl-C reaches a viewer whose SIGINT is at its default; a suite started in the background by a shell
        # without job control runs with SIGINT ignored, which the child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[0].startswith("8 episodes from trajectories.jsonl, eval/global_step_20/results.jsonl")
        url = lines[1].split()[2].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        status, _, body = get(url, "/")
        assert status == 200 and body.count(b"class='episode-row'") == 8
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_episode_list_and_page_show_evidence_metrics(tmp_path):
    episode = {"uid": "q1", "question": "Q?", "answer": "7", "finish_reason": "answered", "num_turns": 1}
    run = tmp_path / "run"
    run.mkdir()
    reward = dict.fromkeys(("score", "format", "retrieval", "selection", "crop", "answer"), 0.0)
    reward.update(score=0.3, selection=1.0, judge_called=False, judge_fallback=False, judge_cached=False)
    line = {
        "schema": 1,
        "uid": "q1",
        "episode": episode,
        "reward": reward,
        "metrics": {"gold_selection": 0.25, "gold_shown": 0.5},
    }
    (run / "results.jsonl").write_text(json.dumps(line) + "\n")
    server, url = serve_in_thread(Viewer(ViewerSettings(run_dir=run)))
    try:
        listing = get(url, "/?sort=gold_selection")[2].decode()
        assert ">gold_selection" in listing and "<td class='num'>0.25</td>" in listing
        page = get(url, "/episode/0/0")[2].decode()
        assert "<caption>reward components</caption>" in page and "<caption>evidence metrics</caption>" in page
        assert "data-evidence='gold_shown'" in page and "data-component='selection'" in page
    finally:
        server.shutdown()
        server.server_close()

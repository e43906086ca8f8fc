"""Command line: serve a run's viewer on loopback, or export it as a static site."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from unidoc_rl.env.vision import PixelBudget
from unidoc_rl.viewer.app import Viewer, ViewerSettings
from unidoc_rl.viewer.images import resolve_pages_dir
from unidoc_rl.viewer.records import RecordError, load_samples_info

DEFAULT_BUDGET = PixelBudget()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m unidoc_rl.viewer",
        description=(
            "Browse a training run (trajectories.jsonl, metrics.jsonl) or an evaluation run (results.jsonl, "
            "summary.json): episodes turn by turn with the pages, boxes and crops the model saw, and the run's curves. "
            "Logs in sub-folders (one per checkpoint) are read too."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the run folder")
    parser.add_argument(
        "--index-dir",
        type=Path,
        default=None,
        help="page images: the dataset folder (DIR/pages/), the search index folder (its sibling pages/), "
        "or a folder of {doc}_{page}.png",
    )
    parser.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="unified samples (JSON/JSONL): reference answers, "
        "gold pages and boxes, categories, for logs whose lines do not carry them",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--out", type=Path, default=None, help="write a static site to this folder and exit")
    parser.add_argument("--max-episodes", type=int, default=None, help="with --out: export only the first N episodes")
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=DEFAULT_BUDGET.min_pixels,
        help="the agent's display budget, to recompute pages' display sizes and zoomed crops",
    )
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_BUDGET.max_pixels, help="see --min-pixels")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = ViewerSettings(
            run_dir=args.run_dir,
            pages_dir=resolve_pages_dir(args.index_dir),
            budget=PixelBudget(args.min_pixels, args.max_pixels),
            samples=load_samples_info(args.samples) if args.samples else None,
        )
        viewer = Viewer(settings)
    except (FileNotFoundError, ValueError, RecordError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The summary rows live as long as the process: keep the cyclic garbage collector from walking them on every
    # full collection (that walk dominated list queries over 100k episodes, 3-5x).
    gc.collect()
    gc.freeze()
    episodes = len(viewer.index.rows)
    logs = ", ".join(log.label for log in viewer.index.logs) or "no episode logs"
    print(f"{episodes:,} episodes from {logs}; page images: {settings.pages_dir or 'none (--index-dir)'}")
    if args.out is not None:
        from unidoc_rl.viewer.static_site import ExportError, export_site

        try:
            written = export_site(viewer, args.out, args.max_episodes)
        except ExportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {written:,} episode pages to {args.out}/index.html")
        return 0
    from unidoc_rl.viewer.server import make_server

    try:
        server = make_server(viewer, args.host, args.port)
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"viewer at http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

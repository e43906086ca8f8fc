"""Trajectory viewer: a training or evaluation run's episodes, pages, boxes, crops and curves in a browser.

`python -m unidoc_rl.viewer RUN_DIR [--index-dir DIR] [--port P]` serves it on loopback; `--out SITE` writes a
static copy instead. See docs/viewer.md.
"""

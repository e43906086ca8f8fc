"""Addresses of the viewer's pages and images, for the live server and for a static export."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from unidoc_rl.viewer.query import ListQuery


class ServerLinks:
    static_site = False

    def episodes(self, query: ListQuery | None = None, **changes) -> str:
        params = (query or ListQuery()).to_params(**changes)
        return "/" + ("?" + urlencode(params) if params else "")

    def episode(self, source: int, line: int) -> str:
        return f"/episode/{source}/{line}"

    def run(self) -> str:
        return "/run"

    def page(self, page_id: str) -> str:
        return f"/page/{quote(page_id)}.png"

    def thumb(self, page_id: str) -> str:
        return f"/thumb/{quote(page_id)}.png"

    def crop(self, source: int, line: int, search: int, crop: int) -> str:
        return f"/crop/{source}/{line}/{search}/{crop}.png"

    def asset(self, name: str) -> str:
        return f"/static/{name}"


class StaticLinks:
    """Relative links between the files of an exported site; `depth` is how deep the linking page sits."""

    static_site = True

    def __init__(self, depth: int = 0):
        self.root = "../" * depth

    def episodes(self, query: ListQuery | None = None, **changes) -> str:
        page = changes.get("page", query.page if query else 1)
        return self.root + ("index.html" if page == 1 else f"index-{page}.html")

    def episode(self, source: int, line: int) -> str:
        return f"{self.root}episodes/{source}-{line}.html"

    def run(self) -> str:
        return self.root + "run.html"

    def page(self, page_id: str) -> str:
        return f"{self.root}pages/{quote(page_id)}.png"

    def thumb(self, page_id: str) -> str:
        return f"{self.root}thumbs/{quote(page_id)}.png"

    def crop(self, source: int, line: int, search: int, crop: int) -> str:
        return f"{self.root}crops/{source}-{line}-{search}-{crop}.png"

    def asset(self, name: str) -> str:
        return f"{self.root}static/{name}"

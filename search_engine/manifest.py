"""The index manifest: what an index holds (backend, model, dims, documents, shards, checksums).

The manifest is the commit record of an index: shard files are written first, and a new manifest replaces the old
one last, in one atomic rename. A reader that loads a manifest therefore sees either the previous or the next
index, never a half-written one. Manifests are JSON and load without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unidoc_rl.common.atomic import atomic_write_json

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "unidoc-search-index"
FORMAT_VERSION = 1
BACKENDS = ("colqwen", "bm25")
STORES = ("embedded", "qdrant")


class SearchIndexError(Exception):
    """Base class for index problems that a user can act on."""


class IndexNotFoundError(SearchIndexError):
    pass


class IndexFormatError(SearchIndexError):
    pass


class IndexMismatchError(SearchIndexError):
    """The index was built with another backend or model than the one asked for."""


@dataclass
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class ShardEntry:
    name: str
    page_ids: list[str]
    token_counts: list[int] | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardEntry:
        files = {name: FileEntry(**entry) for name, entry in data.get("files", {}).items()}
        return cls(data["name"], list(data["page_ids"]), data.get("token_counts"), files)


@dataclass
class DocumentEntry:
    doc_stem: str
    source: str
    content_hash: str
    num_pages: int
    shard: str
    pages_without_text: list[int] = field(default_factory=list)


@dataclass
class Manifest:
    backend: str
    model: str
    model_fingerprint: str | None = None
    dim: int | None = None
    store: str = "embedded"
    store_options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    next_shard: int = 0
    documents: list[DocumentEntry] = field(default_factory=list)
    shards: list[ShardEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise IndexFormatError(f"unknown backend {self.backend!r}; expected one of {BACKENDS}")
        if self.store not in STORES:
            raise IndexFormatError(f"unknown store {self.store!r}; expected one of {STORES}")

    @property
    def num_pages(self) -> int:
        return sum(len(shard.page_ids) for shard in self.shards)

    def page_ids(self) -> list[str]:
        return [page_id for shard in self.shards for page_id in shard.page_ids]

    def documents_by_stem(self) -> dict[str, DocumentEntry]:
        return {doc.doc_stem: doc for doc in self.documents}

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["format"] = FORMAT_NAME
        payload["version"] = FORMAT_VERSION
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"not a search index manifest (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise IndexFormatError(f"index format version {data.get('version')} is not supported ({FORMAT_VERSION})")
        try:
            return cls(
                backend=data["backend"],
                model=data["model"],
                model_fingerprint=data.get("model_fingerprint"),
                dim=data.get("dim"),
                store=data.get("store", "embedded"),
                store_options=dict(data.get("store_options", {})),
                settings=dict(data.get("settings", {})),
                generation=int(data.get("generation", 0)),
                next_shard=int(data.get("next_shard", 0)),
                documents=[DocumentEntry(**doc) for doc in data.get("documents", [])],
                shards=[ShardEntry.from_json(shard) for shard in data.get("shards", [])],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise IndexFormatError(f"malformed manifest: {error}") from error

    def check_compatible(
        self, backend: str | None = None, model: str | None = None, model_fingerprint: str | None = None
    ) -> None:
        """Raise IndexMismatchError unless the index was built with `backend` and `model` (when given)."""
        if backend is not None and backend != self.backend:
            raise IndexMismatchError(
                f"the index was built with backend {self.backend!r} (model {self.model!r}); "
                f"it cannot be queried with backend {backend!r}. Re-ingest with --backend {backend} "
                f"into another index directory, or serve it with --backend {self.backend}."
            )
        if model_fingerprint is not None and self.model_fingerprint is not None:
            if model_fingerprint != self.model_fingerprint:
                raise IndexMismatchError(
                    f"the index was embedded with model {self.model!r} (fingerprint {self.model_fingerprint[:12]}); "
                    f"the query model {model!r} has fingerprint {model_fingerprint[:12]}. Query embeddings of "
                    "another model are not comparable: serve the index with the model that built it."
                )
        elif model is not None and model != self.model:
            raise IndexMismatchError(
                f"the index was built with model {self.model!r}; it cannot be queried with model {model!r}"
            )


def manifest_path(index_dir: Path) -> Path:
    return Path(index_dir) / MANIFEST_NAME


def read_manifest(index_dir: Path) -> Manifest:
    path = manifest_path(index_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise IndexNotFoundError(f"no index at {index_dir} (missing {MANIFEST_NAME}); run ingestion first") from error
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise IndexFormatError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path}: expected a JSON object")
    return Manifest.from_json(data)


def write_manifest(index_dir: Path, manifest: Manifest) -> None:
    atomic_write_json(manifest_path(index_dir), manifest.to_json())

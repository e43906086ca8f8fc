"""Build or update a search index from a folder of PDFs and page-image folders.

    python search_engine/ingestion.py --dataset_dir examples/corpus                 # bm25 over the text layer
    python search_engine/ingestion.py --dataset_dir DIR --backend colqwen --model vidore/colqwen2-v1.0

Incremental: documents are keyed by stem and content hash; unchanged ones are skipped, changed ones re-ingested,
vanished ones removed. Crash-safe and resumable: pages are committed in shards of whole documents, each commit
ends with an atomic manifest replace, so after `kill -9` the index is the last commit and a rerun carries on from
there. Broken or encrypted PDFs are reported and skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from search_engine.bm25_index import BM25_MODEL, DEFAULT_BM25_SETTINGS
from search_engine.corpus import (
    PAGES_DIRNAME,
    DocumentError,
    RenderedPage,
    SourceDocument,
    count_pages,
    discover_documents,
    render_document,
)
from search_engine.ivf import encode_shard
from search_engine.manifest import (
    BACKENDS,
    STORES,
    DocumentEntry,
    Manifest,
    SearchIndexError,
    ShardEntry,
    read_manifest,
    write_manifest,
)
from search_engine.pooling import DEFAULT_POOL_SIZE, pool_pages, pool_tokens
from search_engine.qdrant_index import DEFAULT_PREFETCH_LIMIT, DEFAULT_RECIPE, RECIPES
from search_engine.shards import load_texts, load_vectors, referenced_files, write_text_shard, write_vector_shard
from unidoc_rl.common.atomic import remove_stale_temporaries

logger = logging.getLogger("search_engine.ingestion")

INDEX_DIRNAME = "index"


@dataclass
class IngestConfig:
    dataset_dir: Path
    index_dir: Path | None = None
    pages_dir: Path | None = None
    backend: str = "bm25"
    model: str | None = None
    dpi: int = 144
    batch_size: int = 4
    max_num_visual_tokens: int | None = None
    device: str = "auto"
    shard_pages: int = 256
    pool_size: int = DEFAULT_POOL_SIZE
    # Index-time token pooling (pooling.pool_tokens): each page's vectors clustered to 1/factor of their number
    # before they are stored (1: off). Recorded in the manifest when the index is created.
    token_pool_factor: int = 1
    store: str = "embedded"
    qdrant_url: str | None = None
    qdrant_path: str | None = None
    qdrant_collection: str = "pages"
    # How the service searches the collection (qdrant_index.py): "prefetch" reranks the `qdrant_prefetch` pages
    # nearest by mean vector, "exact" scores every page. Recorded in the manifest when the index is created.
    qdrant_recipe: str = DEFAULT_RECIPE
    qdrant_prefetch: int = DEFAULT_PREFETCH_LIMIT
    # shard_number and replication_factor of a collection created on a server (None: Qdrant's defaults).
    qdrant_shards: int | None = None
    qdrant_replicas: int | None = None
    prune: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.dataset_dir = Path(self.dataset_dir).resolve()
        self.index_dir = Path(self.index_dir).resolve() if self.index_dir else self.dataset_dir / INDEX_DIRNAME
        self.pages_dir = Path(self.pages_dir).resolve() if self.pages_dir else self.dataset_dir / PAGES_DIRNAME
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.store not in STORES:
            raise ValueError(f"store must be one of {STORES}, got {self.store!r}")
        if self.backend == "colqwen" and not self.model:
            raise ValueError("the colqwen backend needs --model (a ColQwen2/ColQwen2.5 checkpoint)")
        if self.backend == "bm25" and self.store != "embedded":
            raise ValueError("the bm25 backend keeps its text in the embedded store (--store embedded)")
        if self.dpi < 18 or self.dpi > 600:
            raise ValueError(f"dpi must be in [18, 600], got {self.dpi}")
        if self.shard_pages < 1:
            raise ValueError("shard_pages must be >= 1")
        if self.token_pool_factor < 1:
            raise ValueError(f"token_pool_factor must be >= 1, got {self.token_pool_factor}")
        if self.qdrant_recipe not in RECIPES:
            raise ValueError(f"qdrant_recipe must be one of {RECIPES}, got {self.qdrant_recipe!r}")
        if self.qdrant_prefetch < 1:
            raise ValueError("qdrant_prefetch must be >= 1")
        if any(n is not None and n < 1 for n in (self.qdrant_shards, self.qdrant_replicas)):
            raise ValueError("qdrant_shards and qdrant_replicas must be >= 1")

    def render_settings(self) -> str:
        return f"dpi={self.dpi}"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pages_added: int = 0
    pages_without_text: list[str] = field(default_factory=list)
    num_pages: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "unchanged": len(self.unchanged),
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "pages_added": self.pages_added,
            "pages_without_text": self.pages_without_text,
            "num_pages": self.num_pages,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _PendingDocument:
    entry: DocumentEntry
    pages: list[RenderedPage]
    vectors: list[np.ndarray] | None = None


class _IndexWriter:
    """Applies removals and appends whole-document shards to an index, one atomic manifest commit at a time."""

    def __init__(self, config: IngestConfig, manifest: Manifest, qdrant_store: Any = None):
        self.config = config
        self.manifest = manifest
        self.qdrant = qdrant_store

    def _shard_name(self) -> str:
        name = f"shard-{self.manifest.next_shard:06d}"
        self.manifest.next_shard += 1
        return name

    def commit(self) -> None:
        self.manifest.generation += 1
        write_manifest(self.config.index_dir, self.manifest)
        self.remove_unreferenced_files()

    def remove_unreferenced_files(self) -> list[str]:
        keep = referenced_files(self.manifest.shards)
        removed = []
        for path in self.config.index_dir.glob("shard-*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def remove_documents(self, stems: set[str]) -> None:
        if not stems:
            return
        if self.qdrant is not None:
            self.qdrant.delete_documents(sorted(stems))
        new_shards: list[ShardEntry] = []
        for shard in self.manifest.shards:
            doomed = {page_id for page_id in shard.page_ids if self._page_to_doc.get(page_id) in stems}
            if not doomed:
                new_shards.append(shard)
                continue
            kept = [i for i, page_id in enumerate(shard.page_ids) if page_id not in doomed]
            if kept:
                new_shards.append(self._rewrite_shard(shard, kept))
        self.manifest.shards = new_shards
        self.manifest.documents = [d for d in self.manifest.documents if d.doc_stem not in stems]
        self._relink_documents()
        self.commit()

    def prepare(self) -> None:
        """Map every indexed page id to its document (stems may contain underscores and digits)."""
        self._page_to_doc: dict[str, str] = {}
        shard_pages = {shard.name: shard.page_ids for shard in self.manifest.shards}
        for doc in self.manifest.documents:
            for page_id in shard_pages.get(doc.shard, []):
                if page_id.startswith(f"{doc.doc_stem}_") and page_id[len(doc.doc_stem) + 1 :].isdigit():
                    number = int(page_id[len(doc.doc_stem) + 1 :])
                    if 1 <= number <= doc.num_pages:
                        self._page_to_doc[page_id] = doc.doc_stem

    def _rewrite_shard(self, shard: ShardEntry, kept: list[int]) -> ShardEntry:
        name = self._shard_name()
        page_ids = [shard.page_ids[i] for i in kept]
        if self.manifest.store == "qdrant":
            return ShardEntry(name=name, page_ids=page_ids)
        if self.manifest.backend == "bm25":
            texts = load_texts(self.config.index_dir, shard)
            return write_text_shard(self.config.index_dir, name, page_ids, [texts[i] for i in kept])
        vectors = load_vectors(self.config.index_dir, shard, int(self.manifest.dim))
        starts = np.concatenate([[0], np.cumsum(shard.token_counts)]).astype(np.int64)
        page_vectors = [np.asarray(vectors[starts[i] : starts[i + 1]]) for i in kept]
        pooled = self._pool(page_vectors)
        entry = write_vector_shard(self.config.index_dir, name, page_ids, page_vectors, pooled)
        encode_shard(self.config.index_dir, self.manifest, entry, pooled)
        return entry

    def _relink_documents(self) -> None:
        owner = {page_id: shard.name for shard in self.manifest.shards for page_id in shard.page_ids}
        for doc in self.manifest.documents:
            doc.shard = owner.get(f"{doc.doc_stem}_1", doc.shard)

    def _pool(self, page_vectors: list[np.ndarray]) -> np.ndarray | None:
        if not self.manifest.settings.get("pool_size"):
            return None
        matrix = np.concatenate(page_vectors, axis=0)
        return pool_pages(matrix, [v.shape[0] for v in page_vectors], int(self.manifest.settings["pool_size"]))

    def append(self, pending: list[_PendingDocument], texts: dict[str, str]) -> None:
        name = self._shard_name()
        page_ids = [page.page_id for doc in pending for page in doc.pages]
        if self.manifest.backend == "bm25":
            shard = write_text_shard(self.config.index_dir, name, page_ids, [texts[p] for p in page_ids])
        else:
            page_vectors = pool_tokens(
                [v for doc in pending for v in doc.vectors], int(self.manifest.settings.get("token_pool_factor", 1))
            )
            if self.qdrant is not None:
                stems = [doc.entry.doc_stem for doc in pending for _ in doc.pages]
                self.qdrant.upsert_pages(page_ids, stems, page_vectors)
                shard = ShardEntry(name=name, page_ids=page_ids, token_counts=[v.shape[0] for v in page_vectors])
            else:
                pooled = self._pool(page_vectors)
                shard = write_vector_shard(self.config.index_dir, name, page_ids, page_vectors, pooled)
                # Coded against the index's codebook (if it has one), so the new pages join the inverted lists.
                encode_shard(self.config.index_dir, self.manifest, shard, pooled)
        for doc in pending:
            doc.entry.shard = name
            self.manifest.documents.append(doc.entry)
        self.manifest.shards.append(shard)
        self.commit()


def _new_manifest(config: IngestConfig, encoder: Any) -> Manifest:
    settings: dict[str, Any] = {"dpi": config.dpi}
    store_options: dict[str, Any] = {}
    if config.backend == "bm25":
        settings["bm25"] = dict(DEFAULT_BM25_SETTINGS)
        return Manifest(backend="bm25", model=BM25_MODEL, settings=settings)
    settings["pool_size"] = config.pool_size if config.store == "embedded" else 0
    settings["token_pool_factor"] = config.token_pool_factor
    settings["max_num_visual_tokens"] = config.max_num_visual_tokens
    if config.store == "qdrant":
        store_options = _qdrant_store_options(config)
    return Manifest(
        backend="colqwen",
        model=encoder.model_name,
        model_fingerprint=encoder.fingerprint,
        dim=encoder.dim,
        store=config.store,
        store_options=store_options,
        settings=settings,
    )


def _qdrant_store_options(config: IngestConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "collection": config.qdrant_collection,
        "recipe": config.qdrant_recipe,
        "prefetch_limit": config.qdrant_prefetch,
    }
    if config.qdrant_url:
        options["url"] = config.qdrant_url
    else:
        options["path"] = str(Path(config.qdrant_path or config.index_dir / "qdrant").resolve())
    for key, value in (("shards", config.qdrant_shards), ("replicas", config.qdrant_replicas)):
        if value is not None:
            options[key] = value
    return options


def _load_encoder(config: IngestConfig):
    from search_engine.colqwen import ColQwenEncoder

    return ColQwenEncoder(
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        max_num_visual_tokens=config.max_num_visual_tokens,
    )


def _open_or_create_manifest(config: IngestConfig, encoder: Any) -> Manifest:
    try:
        manifest = read_manifest(config.index_dir)
    except SearchIndexError as error:
        if "no index" not in str(error):
            raise
        return _new_manifest(config, encoder)
    manifest.check_compatible(backend=config.backend)
    if encoder is not None:
        manifest.check_compatible(model=encoder.model_name, model_fingerprint=encoder.fingerprint)
    if manifest.store != config.store:
        raise SearchIndexError(
            f"{config.index_dir} holds a {manifest.store!r} index; it cannot be updated as {config.store!r}"
        )
    if manifest.settings.get("dpi") != config.dpi:
        logger.warning(
            "dpi changed from %s to %s: every document is re-rendered", manifest.settings.get("dpi"), config.dpi
        )
        manifest.settings["dpi"] = config.dpi
    return manifest


def ingest(config: IngestConfig, encoder: Any = None, qdrant_client: Any = None) -> IngestReport:
    """Bring the index in `config.index_dir` in line with the documents under `config.dataset_dir`."""
    started = time.perf_counter()
    report = IngestReport()
    config.index_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(config.index_dir)
    if config.pages_dir.exists():
        remove_stale_temporaries(config.pages_dir)
    if config.backend == "colqwen" and encoder is None:
        encoder = _load_encoder(config)
    manifest = _open_or_create_manifest(config, encoder)
    qdrant_store = None
    owned_client = None
    if manifest.store == "qdrant":
        from search_engine.qdrant_index import QdrantPageStore, connect

        if qdrant_client is None:
            qdrant_client = owned_client = connect(manifest.store_options)
        qdrant_store = QdrantPageStore.from_store_options(qdrant_client, manifest.store_options)
        qdrant_store.ensure_collection(int(manifest.dim))
    try:
        return _ingest_documents(config, manifest, encoder, qdrant_store, report, started)
    finally:
        if owned_client is not None:
            owned_client.close()


def _ingest_documents(
    config: IngestConfig, manifest: Manifest, encoder: Any, qdrant_store: Any, report: IngestReport, started: float
) -> IngestReport:
    writer = _IndexWriter(config, manifest, qdrant_store)
    writer.prepare()
    for name in writer.remove_unreferenced_files():
        logger.info("removed %s (left by an interrupted run)", name)

    documents, skipped = discover_documents(
        config.dataset_dir, [config.index_dir, config.pages_dir], config.render_settings()
    )
    report.skipped.extend((str(s.path), s.reason) for s in skipped)
    indexed = manifest.documents_by_stem()
    present = {doc.doc_stem for doc in documents}
    changed = {
        d.doc_stem for d in documents if d.doc_stem in indexed and indexed[d.doc_stem].content_hash != d.content_hash
    }
    vanished = set(indexed) - present if config.prune else set()
    if changed or vanished:
        writer.remove_documents(changed | vanished)
        report.removed = sorted(vanished)
    indexed = manifest.documents_by_stem()
    report.unchanged = [d.doc_stem for d in documents if d.doc_stem in indexed]
    to_add: list[tuple[SourceDocument, int]] = []
    for document in documents:
        if document.doc_stem in indexed:
            continue
        try:
            to_add.append((document, count_pages(document)))
        except DocumentError as error:
            report.skipped.append((str(document.path), str(error)))
            logger.warning("skipped %s", error)

    pending: list[_PendingDocument] = []
    texts: dict[str, str] = {}
    pending_pages = 0
    progress = tqdm(total=sum(n for _, n in to_add), unit="page", desc="ingest", disable=not config.progress)
    for document, _ in to_add:
        try:
            pages = render_document(document, config.pages_dir, config.dpi)
        except DocumentError as error:
            report.skipped.append((str(document.path), str(error)))
            logger.warning("skipped %s", error)
            continue
        entry = DocumentEntry(
            doc_stem=document.doc_stem,
            source=str(document.path.relative_to(config.dataset_dir)),
            content_hash=document.content_hash,
            num_pages=len(pages),
            shard="",
        )
        item = _PendingDocument(entry, pages)
        if manifest.backend == "bm25":
            for page in pages:
                texts[page.page_id] = page.text
                if not page.text.strip():
                    entry.pages_without_text.append(page.page_number)
                    report.pages_without_text.append(page.page_id)
            if entry.pages_without_text:
                logger.warning(
                    "%s: pages without a text layer (bm25 cannot find them): %s",
                    document.doc_stem,
                    entry.pages_without_text,
                )
        else:
            item.vectors = []
            for start in range(0, len(pages), config.batch_size):
                images = [Image.open(p.image_path).convert("RGB") for p in pages[start : start + config.batch_size]]
                item.vectors.extend(encoder.embed_images(images))
        pending.append(item)
        pending_pages += len(pages)
        report.added.append(document.doc_stem)
        report.pages_added += len(pages)
        progress.update(len(pages))
        if pending_pages >= config.shard_pages:
            writer.append(pending, texts)
            pending, texts, pending_pages = [], {}, 0
    if pending:
        writer.append(pending, texts)
    progress.close()
    if manifest.generation == 0:
        writer.commit()
    report.num_pages = manifest.num_pages
    report.seconds = time.perf_counter() - started
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Render PDFs (and page-image folders) under --dataset_dir to page images and build or update "
        "a search index over them. Page ids are {doc_stem}_{page}, 1-indexed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset_dir", required=True, help="folder with PDFs and/or folders of page images")
    parser.add_argument("--index_dir", default=None, help="index folder (default: DATASET_DIR/index)")
    parser.add_argument("--pages_dir", default=None, help="rendered page images (default: DATASET_DIR/pages)")
    parser.add_argument("--backend", choices=BACKENDS, default="bm25", help="bm25 (text layer, no model) or colqwen")
    parser.add_argument("--model", default=None, help="ColQwen2/ColQwen2.5 checkpoint (colqwen backend)")
    parser.add_argument("--dpi", type=int, default=144, help="render resolution of PDF pages")
    parser.add_argument("--batch_size", type=int, default=4, help="pages per embedding batch (colqwen)")
    parser.add_argument("--max_num_visual_tokens", type=int, default=None, help="visual-token budget per page")
    parser.add_argument("--device", default="auto", help="torch device for colqwen (auto: cuda if available)")
    parser.add_argument("--shard_pages", type=int, default=256, help="pages per commit (whole documents)")
    parser.add_argument(
        "--pool_size", type=int, default=DEFAULT_POOL_SIZE, help="centroids per page for approx mode (0: off)"
    )
    parser.add_argument(
        "--token_pool_factor",
        type=int,
        default=1,
        help="index-time token pooling: store each page's vectors clustered to 1/factor of their number (1: off; "
        "2-3 trade a little recall for 2-3x less to store and to read, see docs/search.md)",
    )
    parser.add_argument("--store", choices=STORES, default="embedded", help="where page vectors live")
    parser.add_argument("--qdrant_url", default=None, help="Qdrant server/cluster URL (API key: QDRANT_API_KEY)")
    parser.add_argument("--qdrant_path", default=None, help="Qdrant local-mode folder (default: INDEX_DIR/qdrant)")
    parser.add_argument("--qdrant_collection", default="pages", help="Qdrant collection of this index's pages")
    parser.add_argument(
        "--qdrant_recipe",
        choices=RECIPES,
        default=DEFAULT_RECIPE,
        help="how the service searches Qdrant: prefetch (HNSW on mean vectors, then MaxSim rerank of the "
        "candidates) or exact (MaxSim over every page); recorded when the index is created",
    )
    parser.add_argument(
        "--qdrant_prefetch",
        type=int,
        default=DEFAULT_PREFETCH_LIMIT,
        help="candidate pages per query that the prefetch recipe reranks by MaxSim",
    )
    parser.add_argument(
        "--qdrant_shards", type=int, default=None, help="shard_number of a new collection on a server (not local mode)"
    )
    parser.add_argument(
        "--qdrant_replicas",
        type=int,
        default=None,
        help="replication_factor of a new collection on a server (not local mode)",
    )
    parser.add_argument("--keep_missing", action="store_true", help="keep indexed documents whose files vanished")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--log_level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = IngestConfig(
            dataset_dir=Path(args.dataset_dir),
            index_dir=args.index_dir,
            pages_dir=args.pages_dir,
            backend=args.backend,
            model=args.model,
            dpi=args.dpi,
            batch_size=args.batch_size,
            max_num_visual_tokens=args.max_num_visual_tokens,
            device=args.device,
            shard_pages=args.shard_pages,
            pool_size=args.pool_size,
            token_pool_factor=args.token_pool_factor,
            store=args.store,
            qdrant_url=args.qdrant_url,
            qdrant_path=args.qdrant_path,
            qdrant_collection=args.qdrant_collection,
            qdrant_recipe=args.qdrant_recipe,
            qdrant_prefetch=args.qdrant_prefetch,
            qdrant_shards=args.qdrant_shards,
            qdrant_replicas=args.qdrant_replicas,
            prune=not args.keep_missing,
            progress=not args.no_progress,
        )
        if not config.dataset_dir.is_dir():
            raise ValueError(f"--dataset_dir {config.dataset_dir} is not a folder")
        report = ingest(config)
    except (ValueError, SearchIndexError) as error:
        logger.error("%s", error)
        return 2
    import json

    print(json.dumps(report.to_json(), indent=1))
    for path, reason in report.skipped:
        logger.warning("skipped %s: %s", path, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())

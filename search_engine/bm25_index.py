"""bm25 over the PDF text layer (bm25s): the model-free backend and CPU quick-start default."""

from __future__ import annotations

import numpy as np

from search_engine.maxsim import top_k

BM25_MODEL = "bm25s"
DEFAULT_BM25_SETTINGS = {"k1": 1.5, "b": 0.75, "stopwords": "en"}


class Bm25Index:
    """A bm25 index over page texts; queries with no known term score every page 0 (ties: lower index first)."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75, stopwords: str = "en"):
        import bm25s
        from bm25s.tokenization import Tokenizer

        self.num_pages = len(texts)
        self._tokenizer = Tokenizer(stopwords=stopwords)
        self._retriever = bm25s.BM25(k1=k1, b=b)
        if texts:
            corpus_ids = self._tokenizer.tokenize(texts, return_as="ids", show_progress=False)
            self._retriever.index(corpus_ids, show_progress=False)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.zeros((len(queries), self.num_pages), dtype=np.float32)
        if self.num_pages:
            query_ids = self._tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
            for row, ids in enumerate(query_ids):
                scores[row] = self._retriever.get_scores(ids)
        return top_k(scores, k)

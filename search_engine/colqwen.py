"""ColQwen2 / ColQwen2.5 page and query encoders (colpali-engine), batched, bf16 on GPU, fp32 on CPU."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MODEL_FAMILIES = {"qwen2_vl": "colqwen2", "qwen2_5_vl": "colqwen2_5"}
_FINGERPRINT_SAMPLE_BYTES = 1 << 20


def model_fingerprint(model_path: str | Path) -> str | None:
    """A cheap identity of a local checkpoint: its config plus the size, head and tail of each weight file."""
    path = Path(model_path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for name in ("config.json", "adapter_config.json"):
        if (path / name).exists():
            digest.update((path / name).read_bytes())
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with open(weights, "rb") as handle:
            digest.update(handle.read(_FINGERPRINT_SAMPLE_BYTES))
            handle.seek(max(0, size - _FINGERPRINT_SAMPLE_BYTES))
            digest.update(handle.read(_FINGERPRINT_SAMPLE_BYTES))
    return digest.hexdigest()


def model_family(model_path: str | Path) -> str:
    config_file = Path(model_path) / "config.json"
    if not config_file.exists():
        return "colqwen2_5" if "2.5" in str(model_path) or "2_5" in str(model_path) else "colqwen2"
    model_type = json.loads(config_file.read_text()).get("model_type", "")
    if model_type not in MODEL_FAMILIES:
        raise ValueError(f"{model_path}: model_type {model_type!r} is not a ColQwen2/ColQwen2.5 checkpoint")
    return MODEL_FAMILIES[model_type]


class ColQwenEncoder:
    """Embeds page images and text queries into L2-normalized multi-vectors (padding rows removed)."""

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        batch_size: int = 4,
        max_num_visual_tokens: int | None = None,
    ):
        import torch

        from unidoc_rl.compat import load_retriever_processor  # stands in for torchvision before colpali-engine

        # isort: split
        from colpali_engine.models import ColQwen2, ColQwen2_5

        self.model_name = str(model_path)
        self.fingerprint = model_fingerprint(model_path)
        self.family = model_family(model_path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        model_cls = ColQwen2 if self.family == "colqwen2" else ColQwen2_5
        self.model = model_cls.from_pretrained(str(model_path), dtype=dtype).to(self.device).eval()
        extra = {"max_num_visual_tokens": max_num_visual_tokens} if max_num_visual_tokens else {}
        self.processor = load_retriever_processor(model_path, self.family, **extra)
        self.batch_size = batch_size
        self.dim = int(self.model.dim)

    def _forward(self, batch) -> list[np.ndarray]:
        import torch

        batch = batch.to(self.device)
        with torch.inference_mode():
            embeddings = self.model(**batch)
        mask = batch["attention_mask"].bool()
        return [embeddings[row][mask[row]].float().cpu().numpy() for row in range(embeddings.shape[0])]

    def embed_images(self, images: list) -> list[np.ndarray]:
        """Page images -> one [T_i, D] float16 matrix per page."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = self.processor.process_images(images[start : start + self.batch_size])
            out.extend(vectors.astype(np.float16) for vectors in self._forward(batch))
        return out

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        """Text queries -> one [L_i, D] float32 matrix per query."""
        out = []
        for start in range(0, len(queries), max(self.batch_size, 16)):
            batch = self.processor.process_queries(queries[start : start + max(self.batch_size, 16)])
            out.extend(self._forward(batch))
        return out

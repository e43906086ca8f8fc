"""UniDoc-RL: train vision-language models as visual-RAG agents over document page images."""

from unidoc_rl import compat as _compat  # noqa: F401  (must run before colpali-engine is imported)

__version__ = "0.1.0"

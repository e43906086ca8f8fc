"""Visual search engine: page ingestion, multi-vector and bm25 indexes, the HTTP search service and its client.

Modules import heavy dependencies (torch, colpali-engine, qdrant-client) lazily, so `search_engine.client` and
`search_engine.types` stay cheap to import for the agent loop and data synthesis.
"""

"""LLM judge for the answer reward: prompt template, verdict parsing, resilient async clients and the HTTP service."""

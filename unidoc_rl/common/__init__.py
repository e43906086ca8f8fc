"""Small shared utilities: atomic files, JSONL, HTTP server guards, service URLs, settings keys."""

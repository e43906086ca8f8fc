"""Evaluation: benchmark adapters, episodes under the training rules, benchmark metrics, reports and curation."""

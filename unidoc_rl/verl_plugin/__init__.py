"""The project's plugin for verl: what verl needs to train on machines without vLLM or GPUs (see docs/training.md)."""

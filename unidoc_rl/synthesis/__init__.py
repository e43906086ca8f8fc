"""Synthesis of SFT data: teacher trajectories (search, select, crop, answer) over the unified samples."""

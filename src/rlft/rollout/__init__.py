"""Rollouts: the Generator seam (HF backend; vLLM later) and batch assembly."""

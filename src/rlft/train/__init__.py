"""Supervised loops on one shared step shell (`supervised.run_supervised_loop`): SFT, reward
models, DPO / IPO, and distillation (traces, offline and on-policy logit KD)."""

"""Evaluation: accuracy, pass@k and maj@k of sampled answers (`accuracy`), and `rlft eval` over
one or several models side by side (`compare`)."""

"""Prompt datasets: file readers, the built-in arithmetic task, chat formatting and the prompt stream."""

"""Human-feedback ranking app (`rlft label`): people rank K responses per prompt in a browser;
rankings land in SQLite and export as K-way ranking JSONL for reward-model training.

An edge module: fastapi, jinja2 and uvicorn are imported only by `rlft.label.app` / `cli serve`,
never by `import rlft`.
"""

"""Write this example's dataset: word problems (+, -, x) as TRL-style conversational prompt-only rows
with a `solution` column. Seeded, so the committed train.jsonl is what this script writes:

    python examples/trl_task/make_data.py examples/trl_task/train.jsonl
"""

from __future__ import annotations

import json
import random
import sys

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jon", "Kai", "Lena"]
THINGS = ["apples", "marbles", "stickers", "coins", "books", "shells", "cards", "pencils"]
TEMPLATES = [
    ("+", "{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?"),
    ("+", "There are {a} {t} in one box and {b} in another. How many {t} are there in total?"),
    ("+", "{n} collected {a} {t} on Monday and {b} on Tuesday. How many {t} did {n} collect?"),
    ("-", "{n} had {a} {t} and gave away {b}. How many {t} are left?"),
    ("-", "A shop had {a} {t} and sold {b} of them. How many {t} does the shop have left?"),
    ("*", "{n} has {a} bags with {b} {t} in each bag. How many {t} is that altogether?"),
    ("*", "Each of {a} children brings {b} {t}. How many {t} do they bring in total?"),
]
INSTRUCTION = "Give the final number in \\boxed{}."


def problem(rng: random.Random) -> dict:
    op, template = rng.choice(TEMPLATES)
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(10, 99), rng.randint(2, 60)
        if op == "-" and b > a:
            a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    text = template.format(n=rng.choice(NAMES), t=rng.choice(THINGS), a=a, b=b)
    return {"prompt": [{"role": "user", "content": f"{text} {INSTRUCTION}"}], "solution": str(value)}


def main(path: str, rows: int = 800, seed: int = 7) -> None:
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < rows:
        row = problem(rng)
        key = row["prompt"][0]["content"]
        if key not in seen:
            seen.add(key)
            out.append({"id": len(out), **row})
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "train.jsonl")

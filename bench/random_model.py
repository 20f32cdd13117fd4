"""A random-init Llama of a named size with a given tokenizer: large shapes for `rlft bench` and
the GPU checks with nothing to download (the weights are noise, so only timings mean anything).

    python bench/random_model.py --size 0.5b --tokenizer smollm2-135m-instruct --out /tmp/m05

Sizes follow Qwen2.5's widths and depths (0.5b: 1024 x 28 layers, 1.5b: 1536 x 28) with the
tokenizer's vocabulary and tied embeddings: 0.5b = 0.52 B parameters, 1.5b = 1.39 B with SmolLM2's
49152 tokens.
"""

from __future__ import annotations

import argparse
import time

SIZES = {
    "0.5b": {"hidden_size": 1024, "num_hidden_layers": 28, "intermediate_size": 4608, "heads": (16, 4)},
    "1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "intermediate_size": 8960, "heads": (12, 2)},
}


def build(size: str, tokenizer: str, out: str, seed: int = 0) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlft.models.load import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path(tokenizer))
    shape = dict(SIZES[size])
    heads, kv_heads = shape.pop("heads")
    config = LlamaConfig(
        vocab_size=len(tok),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        **shape,
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialising on the GPU takes seconds instead of minutes
        model = LlamaForCausalLM(config)
    print(f"{size}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters -> {out}")
    model.save_pretrained(out)
    tok.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--tokenizer", default="smollm2-135m-instruct", help="tokenizer dir, HF id or alias")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    start = time.perf_counter()
    build(args.size, args.tokenizer, args.out)
    print(f"built in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

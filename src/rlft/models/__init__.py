"""Models: loading policies and tokenizers (`load`), the tiny test model (`tiny`), critics
(`critic`), scalar reward models (`reward_model`), layer-subset students (`students`) and
per-token logprob passes (`logprobs`)."""

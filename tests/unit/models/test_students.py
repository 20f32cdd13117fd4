"""Layer-subset students: the config is cut right, every kept tensor equals the teacher's, and a
student that keeps all layers is the teacher (identical logits), for each supported family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlft.models.students import every_other_layer, make_layer_subset_student, resolve_layers


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlft.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny4", seed=3, layers=4)


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _assert_same_module(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_every_other_layer_keeps_first_and_last():
    assert every_other_layer(4) == [0, 2, 3]  # 0, 2, then the last (3)
    assert every_other_layer(5) == [0, 2, 4]  # the last is already in
    assert every_other_layer(1) == [0]
    assert len(every_other_layer(30)) == 16  # SmolLM2-135M: 0, 2, ..., 28 and 29
    assert resolve_layers("every_other", 6) == [0, 2, 4, 5]
    for bad in ([], [2, 1], [0, 0], [0, 4], "half"):
        with pytest.raises(ValueError):
            resolve_layers(bad, 4)


def test_every_other_student_copies_layers_embeddings_norm_head(teacher_dir: Path, tmp_path: Path):
    out = make_layer_subset_student(str(teacher_dir), "every_other", tmp_path / "student")
    teacher, student = _load(teacher_dir), _load(out)
    assert student.config.num_hidden_layers == 3
    assert student.config.intermediate_size == teacher.config.intermediate_size
    for i, src in enumerate([0, 2, 3]):
        _assert_same_module(student.model.layers[i], teacher.model.layers[src])
    _assert_same_module(student.model.embed_tokens, teacher.model.embed_tokens)
    _assert_same_module(student.model.norm, teacher.model.norm)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied
    assert (out / "tokenizer.json").exists()


def _tiny(model_type: str):
    """A random 4-layer model of each supported family (Qwen2 with sliding-window layers 2 and 3,
    so its per-layer `layer_types` list has to be sliced)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if model_type == "qwen2":
        kw.update(use_sliding_window=True, sliding_window=4, max_window_layers=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw)).eval()


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_keeping_all_layers_gives_the_teachers_logits(model_type: str, tmp_path: Path, tiny_tok):
    teacher = _tiny(model_type)
    out = make_layer_subset_student(teacher, [0, 1, 2, 3], tmp_path / "s", tokenizer=tiny_tok)
    student = _load(out)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(student(ids).logits, teacher(ids).logits)
    if model_type == "qwen2":
        sub = _load(make_layer_subset_student(teacher, "every_other", tmp_path / "s2", tokenizer=tiny_tok))
        assert teacher.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
        assert sub.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]


def test_narrower_mlp_is_the_teacher_mlp_on_the_kept_channels(teacher_dir: Path, tmp_path: Path):
    out = make_layer_subset_student(str(teacher_dir), [1, 3], tmp_path / "narrow", intermediate_keep=0.5)
    teacher, student = _load(teacher_dir), _load(out)
    k = teacher.config.intermediate_size // 2  # 128 channels -> 64
    assert (student.config.num_hidden_layers, student.config.intermediate_size) == (2, k)
    s_mlp, t_mlp = student.model.layers[1].mlp, teacher.model.layers[3].mlp
    assert torch.equal(s_mlp.gate_proj.weight, t_mlp.gate_proj.weight[:k])
    assert torch.equal(s_mlp.up_proj.weight, t_mlp.up_proj.weight[:k])
    assert torch.equal(s_mlp.down_proj.weight, t_mlp.down_proj.weight[:, :k])
    # the teacher MLP with channels k.. switched off (gate rows 0 -> silu(0) = 0) is the student MLP
    with torch.no_grad():
        t_mlp.gate_proj.weight[k:] = 0
        x = torch.randn(3, teacher.config.hidden_size, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(s_mlp(x), t_mlp(x))


def test_non_llama_teacher_is_refused_by_name(tiny_tok, tmp_path: Path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*'gpt2'"):
        make_layer_subset_student(gpt2, "every_other", tmp_path / "x", tokenizer=tiny_tok)
    assert not (tmp_path / "x").exists()


def test_best_block_drops_the_layers_that_change_nothing(tmp_path: Path):
    from rlft.models.students import best_block_layers
    from rlft.models.tiny import build_tiny_model

    model = _load(build_tiny_model(tmp_path / "tiny6", seed=5, layers=6))
    # layers 2 and 3 write nothing to the residual stream (zero attention output and MLP down
    # projections): h + 0 + 0 = h, so the model without them is exactly the model
    with torch.no_grad():
        for i in (2, 3):
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    ids = torch.randint(3, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0  # a right-padded row: its padding is not scored
    layers, scores = best_block_layers(model, ids, mask, keep=4)
    assert layers == [0, 1, 4, 5]
    assert sorted(scores) == [0, 1, 2, 3, 4]  # every start of a 2-layer block in 6 layers
    assert abs(scores[2]) < 1e-6 and min(scores[s] for s in (0, 1, 3, 4)) > 1e-4
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6  # restored

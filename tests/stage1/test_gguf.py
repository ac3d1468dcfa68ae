"""The hf backend loads a GGUF file: a tiny random Qwen2 model and BPE tokenizer written with the `gguf` writer.

The reference is the torch model the file was written from: the GGUF-loaded model must give the
same logits (float32 tensors round-trip exactly, up to float rounding of the forward pass), and
its tokenizer must encode text the way the original BPE tokenizer does.
"""

from __future__ import annotations

import pytest

pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF checkpoints

import numpy as np  # noqa: E402
import torch  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = "a tabby cat and a black dog sit on the red sofa near the green plant. " * 20


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    return tok


def _write_gguf(path, model, tok):
    import json

    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), arch="qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"] if hasattr(config, "rope_parameters") and config.rope_parameters else config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    state = json.loads(tok.to_str())["model"]
    vocab = state["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            index, rest = name[len("model.layers.") :].split(".", 1)
            target = f"blk.{index}.{per_layer[rest]}"
        else:
            target = names[name]
        writer.add_tensor(target, tensor.detach().to(torch.float32).numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokens


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "tiny-qwen2-f32.gguf"
    _write_gguf(path, model, tok)
    return path, model, tok


def test_the_hf_backend_loads_a_gguf_path_with_the_same_weights_and_tokenizer(tiny_gguf):
    from llmseg.stage1.backends.hf_local import HFBackend

    path, reference, tok = tiny_gguf
    for kwargs in ({"model": str(path)}, {"model": str(path.parent), "gguf_file": path.name}):
        backend = HFBackend(device="cpu", dtype="float32", **kwargs)
        assert backend.describe()["gguf_file"] == path.name and backend.describe()["model_class"] == "Qwen2ForCausalLM"
        sample = "a black cat near the red sofa"
        assert backend.tokenizer(sample, add_special_tokens=False)["input_ids"] == tok.encode(sample).ids
        ids = torch.tensor([tok.encode(TEXT[:120]).ids])
        with torch.inference_mode():
            got = backend.lm(ids).logits.double()
            want = reference(ids).logits.double()
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
        rendered = backend.render([{"role": "user", "content": "Class: cat"}])
        assert rendered == "<|im_start|>user\nClass: cat<|im_end|>\n<|im_start|>assistant\n"


def test_stage_one_runs_on_the_gguf_model_through_the_cli_option(tiny_gguf, tmp_path):
    """`generate_label_set(..., gguf_file=...)` reaches the model; a random model's answer is unusable, so it fails loudly."""
    from llmseg.stage1.generate import GenerationError, generate_label_set

    path, _, _ = tiny_gguf
    with pytest.raises(GenerationError) as info:
        generate_label_set(
            ["cat", "dog"], backend="hf", model=str(path.parent), gguf_file=path.name, device="cpu", dtype="float32",
            max_tokens=8, max_retries=1, progress=False, cache_path=tmp_path / "log.jsonl",
        )
    assert set(info.value.failed) == {"cat", "dog"}
    from llmseg.io import read_jsonl

    answers = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["kind"] == "answer"]
    assert len(answers) == 4 and all(0 < r["meta"]["usage"]["completion_tokens"] <= 8 for r in answers)


def test_cli_gguf_file_option_reaches_the_backend(tiny_gguf, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmseg.cli import app
    from llmseg.io import read_jsonl

    path, _, _ = tiny_gguf
    (tmp_path / "classes.txt").write_text("cat\n", encoding="utf-8")
    cache = tmp_path / "log.jsonl"
    args = ["subclasses", "toy", "--classes-file", str(tmp_path / "classes.txt"), "--backend", "hf", "--model", str(path.parent),
            "--gguf-file", path.name, "--device", "cpu", "--dtype", "float32", "--max-tokens", "4", "--max-retries", "0",
            "--quiet", "--out", str(tmp_path / "top5.json"), "--cache", str(cache)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # a random model gives no usable answer: the run fails, logged
    answers = [r for r in read_jsonl(cache) if r["kind"] == "answer"]
    assert len(answers) == 1 and answers[0]["model"] == f"{path.parent}/{path.name}"  # the file is in the cache key

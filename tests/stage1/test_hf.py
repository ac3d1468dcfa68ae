"""The hf backend with a tiny randomly initialised Llama and a WordLevel tokenizer with a chat template,
built here, saved to a folder and loaded through the same code a user's model takes."""

from __future__ import annotations

import pytest

from llmseg.io import read_jsonl

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = ['{', '}', '[', ']', ',', '"subclasses":', '"a"', '"b"', "cat", "dog", "car", "Class:", "5", "2"]
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
ANSWER = '{ "subclasses": [ "a" , "b" ] }'


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=SPECIAL[4:],
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=2, eos_token_id=3, pad_token_id=1,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama-chat")
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(folder)
    _model(len(tokenizer)).save_pretrained(folder)
    return folder


def test_backend_applies_the_chat_template_and_reports_usage(random_model):
    from llmseg.stage1.backends import Sampling, make_backend
    from llmseg.stage1.prompts import load_prompt

    backend = make_backend("hf", str(random_model), device="cpu", dtype="float32")
    assert backend.local_files_only and backend.describe()["model_class"] == "LlamaForCausalLM"
    messages = load_prompt("subclasses.visual.v1").render("cat", 5, "photos", ["dog", "car"])
    rendered = backend.render(messages)
    assert rendered.startswith("<|system|> ") and "</s> <|user|> " in rendered and rendered.endswith("<|assistant|>")
    reference = _tokenizer()  # an independent copy: the same template gives the same token count
    expected_tokens = len(reference(reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"])
    first = backend.complete(messages, schema=None, sampling=Sampling(max_tokens=6))
    second = backend.complete(messages, schema=None, sampling=Sampling(max_tokens=6))
    assert first.usage["prompt_tokens"] == expected_tokens
    assert 1 <= first.usage["completion_tokens"] <= 6 and first.finish_reason in ("stop", "length")
    assert first.text == second.text  # greedy decoding is deterministic


def test_random_model_run_is_reasked_and_fails_naming_every_class(random_model, tmp_path):
    from llmseg.stage1.generate import GenerationError, generate_label_set

    cache = tmp_path / "hf.jsonl"
    classes = ["cat", "dog"]
    with pytest.raises(GenerationError) as info:
        generate_label_set(
            classes, backend="hf", model=str(random_model), k=2, max_retries=1, max_tokens=6, device="cpu",
            dtype="float32", cache_path=cache, progress=False,
        )  # fmt: skip
    assert set(info.value.failed) == set(classes)
    answers = [r for r in read_jsonl(cache) if r["kind"] == "answer"]
    assert sorted(r["class"] for r in answers) == ["cat", "cat", "dog", "dog"]  # each asked, then re-asked once
    reask = next(r for r in answers if r["class"] == "cat" and r["answer"] == 1)
    assert [m["role"] for m in reask["messages"]][-2:] == ["assistant", "user"]
    assert "could not be used" in reask["messages"][-1]["content"]
    assert all(r["backend"] == "hf" and r["structured"] is False for r in answers)


SHORT_PROMPT = "---\nid: short.v1\nversion: 1\n---\n## system\nJSON only.\n## user\nGive {k} types of {class_name} as JSON.\n"


def _train_to_answer(folder, prompt_file, steps: int = 120):
    """Teach the tiny model one answer: after `<|assistant|>` it writes ANSWER then </s>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmseg.stage1.prompts import load_prompt

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    template = load_prompt(prompt_file)
    batch = []
    for name in ("cat", "dog", "car"):
        prompt = tokenizer.apply_chat_template(template.render(name, 2), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt + " " + ANSWER + " </s>", add_special_tokens=False)["input_ids"]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * start + ids[start:]
        batch.append((torch.tensor([ids]), torch.tensor([labels])))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster than fighting over shared cores
    try:
        for step in range(steps):
            ids, labels = batch[step % len(batch)]
            loss = model(input_ids=ids, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(folder)
    return float(loss.detach())


@pytest.mark.slow
def test_a_model_that_knows_the_answer_gives_a_label_set_through_the_cli(random_model, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from llmseg.cli import app
    from llmseg.labelset import load_label_set, load_meta

    folder = tmp_path / "trained"
    shutil.copytree(random_model, folder)
    prompt_file = tmp_path / "short.md"
    prompt_file.write_text(SHORT_PROMPT, encoding="utf-8")
    loss = _train_to_answer(folder, prompt_file)
    assert loss < 0.05
    classes_file = tmp_path / "toy" / "classes.txt"
    classes_file.parent.mkdir()
    classes_file.write_text("cat\ndog\n", encoding="utf-8")
    out = tmp_path / "toy" / "top2.json"
    result = CliRunner().invoke(
        app,
        ["subclasses", "toy", "--classes-file", str(classes_file), "--backend", "hf", "--model", str(folder), "--k", "2",
         "--prompt", str(prompt_file), "--device", "cpu", "--dtype", "float32", "--max-tokens", "16", "--out", str(out),
         "--quiet", "--allow-shared-subclasses"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_label_set(out, ["cat", "dog"]).root == {"cat": ["a", "b"], "dog": ["a", "b"]}
    meta = load_meta(out)
    assert meta.generator == "hf" and meta.model == str(folder) and meta.model_extra["backend"]["local_files_only"]
    assert meta.per_class_attempts == {"cat": 1, "dog": 1}

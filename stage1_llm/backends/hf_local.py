"""A local transformers causal LM, prompted through its own chat template.

The model is a hub id or a local folder. Nothing is downloaded when `HF_HUB_OFFLINE` (or
`TRANSFORMERS_OFFLINE`) is set or when the model is a local path (`local_files_only`).
Greedy decoding unless a temperature above 0 is asked for; JSON is parsed out of the text
by the generation loop (no server-side schema here). One request at a time.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal, cast, get_args

from huggingface_hub import constants, try_to_load_from_cache
from pydantic import BaseModel, ConfigDict, Field

from .base import Completion, FatalBackendError, Sampling
from .registry import BACKENDS

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES: tuple[str, ...] = get_args(Dtype)


def offline_mode() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


class HFSettings(BaseModel):
    """Settings of the `hf` backend (a local transformers causal LM)."""

    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="torch device (default cuda if available, else cpu)")
    dtype: Dtype = "auto"
    trust_remote_code: bool = False
    gguf_file: str | None = Field(None, description="a GGUF file: a path, or a file name inside the model folder / hub repo")


def gguf_source(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name) for `from_pretrained`: a `.gguf` path as `model` or as `gguf_file` works too."""
    if gguf_file is None and model.lower().endswith(".gguf"):
        gguf_file = model
        model = str(Path(model).expanduser().parent)
    if gguf_file is not None and Path(gguf_file).expanduser().is_file():
        path = Path(gguf_file).expanduser().resolve()
        return str(path.parent), path.name
    return model, gguf_file


def _looks_like_path(model: str) -> bool:
    """A folder path rather than a hub id 'org/name': absolute, ./ or ~, or more than one '/'."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model or Path(model).expanduser().exists()


def check_model_source(model: str) -> None:
    """Refuse at once a model folder that is missing or holds no config.json, or a hub id offline and uncached.

    Why: transformers answers these with unrelated messages ("Repo id must be in the form ...",
    a sentencepiece error) after importing everything.
    """
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.exists():
            raise FatalBackendError(f"no model folder at {folder} (--model takes a hub id 'org/name' or a local model folder)")
        if not folder.is_dir():
            raise FatalBackendError(f"--model {folder} is a file, not a model folder (for a .gguf file pass it as --model FILE.gguf)")
        if not (folder / "config.json").is_file():
            raise FatalBackendError(
                f"no config.json in {folder}: a transformers model folder holds config.json, the tokenizer files and the "
                f"weights (e.g. huggingface-cli download ORG/NAME --local-dir {folder})"
            )
        return
    if offline_mode():
        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise FatalBackendError(
                f"model '{model}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                f"download it on a connected machine (huggingface-cli download {model}) or pass --model <local folder>"
            )


@BACKENDS.register("hf", config=HFSettings, help="a local transformers model (hub id or folder)")
class HFBackend:
    """`AutoTokenizer` + `AutoModelForCausalLM.generate` behind the backend interface."""

    name = "hf"
    supports_schema = False
    max_concurrency: int | None = 1

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
    ):
        if gguf_source(model, gguf_file)[1] is None:
            check_model_source(model)  # before the (slow) imports
        # lazy import: start-up time (a bad --model is refused before torch and transformers load; the registry imports this module to check --backend hf settings)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise FatalBackendError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
        self.model = model
        folder, self.gguf_file = gguf_source(model, gguf_file)
        if self.gguf_file is not None:
            # lazy import: start-up time (transformers, as above)
            from transformers.utils import is_gguf_available

            if not is_gguf_available():
                raise FatalBackendError(f"loading the GGUF file '{self.gguf_file}' needs the gguf package: pip install gguf")
            model = folder
            if not self.model.lower().endswith(".gguf"):  # the file is part of the model's identity (and cache keys)
                self.model = f"{folder.rstrip('/')}/{self.gguf_file}"
        self.local = Path(model).expanduser().exists()
        self.local_files_only = self.local or offline_mode()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype
        source = str(Path(model).expanduser()) if self.local else model
        try:
            extra = {"gguf_file": self.gguf_file} if self.gguf_file is not None else {}
            self.tokenizer = AutoTokenizer.from_pretrained(
                source, local_files_only=self.local_files_only, trust_remote_code=trust_remote_code, **extra
            )
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            self.lm = AutoModelForCausalLM.from_pretrained(
                source, local_files_only=self.local_files_only, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra
            )
        except (OSError, ValueError) as exc:
            where = "the local folder" if self.local else ("the local HF cache (offline mode)" if self.local_files_only else "the hub")
            raise FatalBackendError(f"cannot load model '{model}' from {where}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise FatalBackendError(f"model '{model}': its tokenizer has no chat template; use an instruction-tuned (chat) model")
        self.lm.to(self.device)  # type: ignore[arg-type]  # transformers types `to` as its unbound wrapper
        self.lm.eval()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "local_files_only": self.local_files_only,
            "device": str(self.device),
            "dtype": str(next(self.lm.parameters()).dtype).replace("torch.", ""),
            "model_class": type(self.lm).__name__,
            **({"gguf_file": self.gguf_file} if self.gguf_file is not None else {}),
        }

    def render(self, messages: list[dict[str, str]]) -> str:
        """The exact prompt text the model sees: the chat template applied, generation prompt added."""
        # tokenize=False gives the text; the stub's return type covers every mode
        return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, sampling: Sampling) -> Completion:
        import torch  # lazy import: start-up time (this module stays torch-free until a model loads; see __init__)

        text = self.render(messages)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        sample = sampling.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "do_sample": sample}
        if sample:
            options["temperature"] = sampling.temperature
            if sampling.top_p is not None:
                options["top_p"] = sampling.top_p
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.inference_mode():
            if sample and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            try:
                output = self.lm.generate(**inputs, pad_token_id=pad, **options)
            except (RuntimeError, ValueError) as exc:  # out of memory, a bad device or dtype: no request can work
                raise FatalBackendError(f"model '{self.model}' failed to generate on {self.device}: {exc}") from exc
        new = output[0, prompt_tokens:]
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        stopped = bool(len(new)) and int(new[-1]) in eos_ids
        answer = cast(str, self.tokenizer.decode(new, skip_special_tokens=True))  # one sequence in, one text out
        return Completion(
            text=answer,
            finish_reason="stop" if stopped or len(new) < sampling.max_tokens else "length",
            model=self.model,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": int(len(new)), "total_tokens": prompt_tokens + int(len(new))},
            extra={"device": str(self.device)},
        )

    def close(self) -> None:
        pass

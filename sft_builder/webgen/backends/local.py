"""A local transformers model through `pipeline("text-generation")`, prompts batched on one device.

torch and transformers are imported only when this backend is built (torch lives in the `local` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalmix.core.errors import UserError
from sft_builder.webgen.backends import Completion


@dataclass(frozen=True, slots=True)
class LocalConfig:
    model: str  # a folder or a hub id
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 3072
    batch_size: int = 5
    device: str = "cpu"


class TransformersBackend:
    """Runs a batch of prompts per call; sampling is seeded per call so a run can be repeated exactly."""

    parallel = False

    def __init__(self, cfg: LocalConfig) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoTokenizer, pipeline
        except ImportError as exc:
            raise UserError(
                f"the transformers backend needs torch: pip install 'crystalmix[local]' ({exc})"
            ) from None
        self.cfg = cfg
        self.model = cfg.model
        try:
            tok = AutoTokenizer.from_pretrained(cfg.model)
            tok.padding_side = "left"  # decoder-only: pad on the left so every row continues its own prompt
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._pipe = pipeline("text-generation", model=cfg.model, tokenizer=tok, device=cfg.device)
        except (OSError, ValueError) as exc:
            where = "folder" if Path(cfg.model).exists() else "model id"
            raise UserError(
                f"cannot load a text-generation model from this {where}: {exc}", path=cfg.model
            ) from None
        self._tok = tok

    def close(self) -> None:
        pass

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]:
        from transformers import set_seed

        set_seed(seed)
        cfg = self.cfg
        outputs = self._pipe(
            list(prompts),
            batch_size=cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            return_tensors=True,
            pad_token_id=self._tok.pad_token_id,
        )
        return [
            self._decode(p, out[0]["generated_token_ids"]) for p, out in zip(prompts, outputs, strict=True)
        ]

    def _decode(self, prompt: str, ids: Any) -> Completion:
        """Cut the prompt (and left padding) off the sequence; no EOS in what is left means the limit hit."""
        ids = list(ids)
        prompt_len = len(self._tok(prompt, add_special_tokens=False)["input_ids"])
        pad = self._tok.pad_token_id
        lead = 0
        while lead < len(ids) and ids[lead] == pad and lead < len(ids) - prompt_len:
            lead += 1
        new = ids[lead + prompt_len :]
        eos = self._tok.eos_token_id
        finish = "stop"
        generated = len(new)
        if eos in new:
            generated = new.index(eos) + 1  # what follows the EOS is padding of the batch, not generated
            new = new[: new.index(eos)]
        elif len(new) >= self.cfg.max_new_tokens:
            finish = "length"
        text = self._tok.decode(new, skip_special_tokens=True)
        return Completion(text, finish, prompt_len, generated)

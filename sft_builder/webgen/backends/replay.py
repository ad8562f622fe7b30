"""The dry run: answers replayed from a JSONL of recorded model answers instead of a model or a server.

Each prompt gets the recorded answer picked by a hash of the prompt text, so a run is deterministic and
resumable like a real one (the same prompt always gets the same answer) and needs neither a GPU nor a network.
Prompts outnumber answers, so answers repeat: the repeats are what the ROUGE-L filter then rejects, as it
rejects a real model repeating itself. Usage is counted with the bundled demo tokenizer (a real count of the
prompt and the answer, not a server's), so the dry run also shows what the accounting and `--price-*` print.

A recording is one JSON object per line: ``text`` (the answer as the model wrote it), optionally
``finish_reason`` (``stop`` or ``length``: the model hit its token limit) and ``id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalmix.core.errors import UserError
from sft_builder.webgen.backends import Completion
from sft_builder.webgen.seeds import bundled

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_RECORDING = bundled("replay_answers.jsonl")


def load_recording(path: str | Path | Traversable = DEFAULT_RECORDING) -> list[tuple[str, str]]:
    """The (text, finish_reason) answers of a recording; a bad line stops with its line number."""
    p = Path(path) if isinstance(path, str) else path
    if not p.is_file():
        raise UserError("recorded answers not found", path=str(p))
    answers: list[tuple[str, str]] = []
    with p.open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec: Any = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"not JSON: {exc.msg}", path=str(p), line=n) from None
            text = rec.get("text") if isinstance(rec, dict) else None
            finish = rec.get("finish_reason", "stop") if isinstance(rec, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise UserError("a recorded answer needs a non-empty 'text'", path=str(p), line=n)
            if finish not in ("stop", "length"):
                raise UserError("finish_reason must be 'stop' or 'length'", path=str(p), line=n)
            answers.append((text, finish))
    if not answers:
        raise UserError("the recording holds no answers", path=str(p))
    return answers


def recording_digest(answers: Sequence[tuple[str, str]]) -> str:
    """Content hash of a recording: it stands for the model in the run's fingerprint."""
    return hashlib.sha256(json.dumps(list(answers)).encode("utf-8")).hexdigest()[:16]


class ReplayBackend:
    """Answers every prompt from a recording; `model` names the recording by its content hash."""

    parallel = False  # nothing to wait for: no point in threads

    def __init__(self, path: str | Path | Traversable = DEFAULT_RECORDING) -> None:
        from tokenizers import Tokenizer

        from crystalmix.core.tokenizer import demo_tokenizer_file

        self.answers = load_recording(path)
        self.model = f"replay-{recording_digest(self.answers)}"
        self._tok = Tokenizer.from_str(demo_tokenizer_file())

    def close(self) -> None:
        pass

    def _tokens(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]:
        out = []
        for prompt in prompts:
            pick = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % len(self.answers)
            text, finish = self.answers[pick]
            out.append(Completion(text, finish, self._tokens(prompt), self._tokens(text)))  # type: ignore[arg-type]
        return out

"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, TGI) over httpx: chat or completions.

Transient failures (429, 5xx, connection errors, timeouts, unreadable answers) are retried with exponential
backoff and jitter, honouring Retry-After; a refusal such as 401/404 stops at once with the server's message.
A server is not trusted: an answer is read as a stream and cut at `max_response_bytes` (a larger one stops
the run with one line instead of filling memory), a request never takes longer than `timeout` in all, and
every message is redacted (the API key, ``user:pass@`` in the URL, headers the server echoes back).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from crystalmix.core.errors import UserError
from crystalmix.core.redact import redact
from sft_builder.webgen.backends import Completion

Endpoint = Literal["chat", "completions"]
ERROR_BODY_BYTES = 64 << 10  # of an error answer, enough for the server's message


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    base_url: str  # up to and including the version, e.g. http://localhost:8000/v1
    model: str
    api_key: str | None = None
    endpoint: Endpoint = "chat"
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 3072
    timeout: float = 120.0
    max_retries: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    concurrency: int = 4
    max_response_bytes: int = 16 << 20  # an answer of max_tokens is kilobytes; this bounds a hostile one


class _Transient(Exception):
    """A failure worth retrying; `wait` is the server's Retry-After when it sent one."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class OpenAICompatBackend:
    """Sends each prompt as its own request; safe to call from several threads at once."""

    parallel = True

    def __init__(self, cfg: HTTPConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self._sleep = sleep
        self._jitter = random.Random()  # jitter only spaces retries out; it never touches the output
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self._client = httpx.Client(
            base_url=cfg.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout, connect=min(cfg.timeout, 30.0)),
            limits=httpx.Limits(max_connections=max(cfg.concurrency, 1)),
        )

    def close(self) -> None:
        self._client.close()

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]:
        return [self._complete_one(p, seed + i) for i, p in enumerate(prompts)]

    def _body(self, prompt: str, seed: int) -> tuple[str, dict[str, Any]]:
        cfg = self.cfg
        body: dict[str, Any] = {
            "model": cfg.model,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
            "seed": seed,
        }
        if cfg.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            return "/chat/completions", body
        body["prompt"] = prompt
        return "/completions", body

    def _complete_one(self, prompt: str, seed: int) -> Completion:
        path, body = self._body(prompt, seed)
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                return self._post(path, body)
            except _Transient as exc:
                last = str(exc)
                if attempt == self.cfg.max_retries:
                    break
                wait = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt)
                wait = wait * (0.5 + self._jitter.random() / 2)
                if exc.wait is not None:
                    wait = min(max(wait, exc.wait), self.cfg.max_backoff)
                self._sleep(wait)
        raise self._error(f"{self.cfg.base_url}{path}: no answer after {self.cfg.max_retries + 1} attempts ({last})")

    def _error(self, message: str) -> UserError:
        return UserError(redact(message, secrets=(self.cfg.api_key,)))

    def _post(self, path: str, body: dict[str, Any]) -> Completion:
        start = time.monotonic()
        try:
            with self._client.stream("POST", path, json=body) as resp:
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Transient(f"HTTP {resp.status_code}", _retry_after(resp))
                if resp.status_code >= 400:
                    text = self._read(resp, start, limit=ERROR_BODY_BYTES, cut=True).decode("utf-8", "replace")
                    raise self._error(f"{self.cfg.base_url}{path} refused the request (HTTP {resp.status_code}): "
                                      f"{text[:300]}")
                raw = self._read(resp, start, limit=self.cfg.max_response_bytes)
        except httpx.TransportError as exc:  # connection refused/reset, timeouts
            raise _Transient(redact(f"{type(exc).__name__}: {exc}", secrets=(self.cfg.api_key,))) from None
        try:
            answer = json.loads(raw)
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.cfg.endpoint == "chat" else choice["text"]
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Transient("unreadable answer") from None
        if not isinstance(text, str):
            text = ""
        prompt_tokens, completion_tokens = _usage(answer)
        return Completion(text, finish, prompt_tokens, completion_tokens)

    def _read(self, resp: httpx.Response, start: float, *, limit: int, cut: bool = False) -> bytes:
        """The (decompressed) body, at most `limit` bytes: past it, cut (`cut`) or stop the run."""
        too_big = self._error(
            f"{self.cfg.base_url}: the server's answer is larger than {limit:,} bytes (max_response_bytes); "
            "is --base-url an OpenAI-compatible endpoint?")
        declared = resp.headers.get("content-length", "")
        if not cut and declared.isdigit() and int(declared) > limit:
            raise too_big
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > limit:
                if cut:
                    return bytes(buf[:limit])
                raise too_big
            if time.monotonic() - start > self.cfg.timeout:
                raise _Transient(f"the answer took longer than --timeout {self.cfg.timeout:g}s")
        return bytes(buf)


def _usage(answer: Any) -> tuple[int | None, int | None]:
    """The server's ``usage`` counts (OpenAI, vLLM, llama.cpp and TGI all send them); None where absent."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None, None

    def count(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return count("prompt_tokens"), count("completion_tokens")


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff is good enough

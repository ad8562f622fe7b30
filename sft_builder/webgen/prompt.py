"""The generation prompt: a Jinja template rendered with the sampled seed tasks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from crystalmix.core.errors import UserError
from sft_builder.webgen.seeds import SeedTask, bundled

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_PROMPT = bundled("prompt.txt")


class PromptTemplate:
    """A loaded prompt template. Variables: `seeds` (instruction/input/output each), `num_tasks`.

    Rendered in Jinja's immutable sandbox: unsafe attributes and calls are template errors (one line).
    """

    def __init__(self, path: str | Path | Traversable = DEFAULT_PROMPT, num_tasks: int = 20) -> None:
        p = Path(path) if isinstance(path, str) else path
        if not p.is_file():
            raise UserError("prompt template not found", path=str(p))
        self.source = p.read_text(encoding="utf-8")
        self.num_tasks = num_tasks
        # the sandbox chat templates render in (transformers uses the same): a prompt file is code from
        # somewhere else, and must not reach Python's internals (`cycler.__init__.__globals__.os`)
        env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise UserError(f"prompt template: {exc.message}", path=str(p), line=exc.lineno) from None
        self.path = p

    def render(self, seeds: tuple[SeedTask, ...]) -> str:
        """The prompt; it ends on the open header of item len(seeds)+1 so a completion continues the list."""
        try:
            return self._template.render(seeds=seeds, num_tasks=self.num_tasks)
        except jinja2.TemplateError as exc:
            raise UserError(f"prompt template: {exc}", path=str(self.path)) from None

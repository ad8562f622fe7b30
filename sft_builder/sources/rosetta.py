"""Rosetta Code tasks as "solve this task in language X" conversations.

Two forms: CodeAlpaca's ``rosetta_alpaca.json`` (``instruction`` = task text, ``input`` = language name,
``output`` = code), and the RosettaCodeData folder layout (``Task/<task>/00DESCRIPTION`` plus
``Task/<task>/<Lang>/<file>``, one conversation per solution file). Both render the same way: the user
asks for the task in that language, the description turned from MediaWiki markup into plain text
(`sources.mediawiki`); the assistant answers with the code in a fenced block. Non-breaking spaces become
plain spaces in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, InvalidRecordError, Message
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import FileLabels, as_mapping, record_id, text_field
from sft_builder.sources.mediawiki import normalize_spaces, to_text

DESCRIPTION = "00DESCRIPTION"
FENCE = {"c++": "cpp", "c#": "csharp", "f#": "fsharp", "objective-c": "objectivec", "common lisp": "lisp",
         "visual basic .net": "vbnet", "javascript": "javascript", "python": "python", "go": "go"}


@dataclass(frozen=True, slots=True)
class RosettaOptions:
    languages: tuple[str, ...] = ()  # keep only these languages (case-insensitive); empty = all
    convert_markup: bool = True  # MediaWiki -> text for the description (also for rosetta_alpaca.json)


def fence_tag(language: str) -> str:
    low = language.strip().lower()
    return FENCE.get(low, low.replace(" ", "-"))


def user_prompt(language: str, description: str, title: str | None = None) -> str:
    """The documented user turn: which task, which language, then the task text."""
    what = f'the Rosetta Code task "{title}"' if title else "the following Rosetta Code task"
    return f"Write a solution to {what} in {language}.\n\n{description}"


def assistant_answer(language: str, code: str) -> str:
    return f"```{fence_tag(language)}\n{normalize_spaces(code).strip(chr(10))}\n```"


@register
class RosettaAdapter(Adapter[RosettaOptions]):
    name = "rosetta"
    forms = ("rosetta_alpaca.json {instruction, input=language, output=code}; "
             "RosettaCodeData folders Task/<task>/{00DESCRIPTION, <Lang>/<file>}")
    Options = RosettaOptions

    def __init__(self, options: RosettaOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self.labels = FileLabels()
        self.languages = {lang.lower() for lang in options.languages}

    def read(self, inputs: Sequence[str] | str, *, split: str = "train",
             data_files: str | Sequence[str] | None = None) -> Iterator[RawRecord]:
        """Folders in the RosettaCodeData layout are walked here; everything else goes to the readers."""
        from crystalmix.core.readers import plan_inputs

        specs = [inputs] if isinstance(inputs, str) else list(inputs)
        if not specs:
            raise UserError("no input given")
        # resolve everything first so a bad path fails before any output, then read in input order
        parts: list[Callable[[], Iterator[RawRecord]]] = []
        for spec in specs:
            root = _task_root(Path(spec))
            if root is None:
                parts += plan_inputs([spec], split=split, data_files=data_files)
            else:
                parts.append(lambda root=root: _walk_tasks(root))
        return _chain(parts)

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = as_mapping(record.data)
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if "code" in data and "task" in data:  # a solution file from the folder layout
            language, title = str(data["language"]), str(data["task"]).replace("-", " ").replace("_", " ")
            self._check_language(language)
            if data.get("description") is None:
                raise InvalidRecordError("missing_description", f"no {DESCRIPTION} for task {data['task']}")
            if data.get("code") is None:
                raise InvalidRecordError("not_utf8", "the solution file is not UTF-8 text")
            description = str(data["description"])
            code = str(data["code"])
            meta.update(task=data["task"], language=language)
            cid = f"{self.source}/{data['task']}/{language}/{Path(record.file).name}"
        else:
            description = text_field(data, "instruction")
            language = text_field(data, "input").strip()
            code = text_field(data, "output")
            title = None
            if not language:
                raise InvalidRecordError("missing_language", "empty 'input' (the language name)")
            self._check_language(language)
            meta["language"] = language
            cid = record_id(self.source, self.labels(record.file), record.line)
        text = to_text(description) if self.options.convert_markup else normalize_spaces(description).strip()
        if not text.strip():
            raise InvalidRecordError("empty_content", "empty task description")
        if not code.strip():
            raise InvalidRecordError("empty_content", "empty solution")
        messages = (Message("user", user_prompt(language, text, title)),
                    Message("assistant", assistant_answer(language, code)))
        return (Conversation(cid, self.source, messages, meta),)

    def _check_language(self, language: str) -> None:
        if self.languages and language.lower() not in self.languages:
            raise InvalidRecordError("filtered_language", f"{language} is not in the 'languages' option")


def _chain(parts: list[Callable[[], Iterator[RawRecord]]]) -> Iterator[RawRecord]:
    for part in parts:
        yield from part()


def _task_root(path: Path) -> Path | None:
    """The folder holding task folders if `path` is (inside) a RosettaCodeData layout, else None."""
    if not path.is_dir():
        return None
    if (path / "Task").is_dir():
        return path / "Task"
    if (path / DESCRIPTION).is_file():
        return path  # a single task folder
    if any((child / DESCRIPTION).is_file() for child in path.iterdir() if child.is_dir()):
        return path
    return None


def _walk_tasks(root: Path) -> Iterator[RawRecord]:
    tasks = [root] if (root / DESCRIPTION).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
    for task in tasks:
        desc_file = task / DESCRIPTION
        description = desc_file.read_text(encoding="utf-8", errors="replace") if desc_file.is_file() else None
        for lang_dir in sorted(p for p in task.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(p for p in lang_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
                try:
                    code: str | None = f.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    code = None
                data = {"task": task.name, "language": lang_dir.name, "description": description,
                        "code": code}
                yield RawRecord(data, str(f), 1)

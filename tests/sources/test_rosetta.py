"""Rosetta Code: both forms give the same prompt shape; markup to text; NBSP normalised; rejects."""

from __future__ import annotations

from .conftest import turns


def test_rosetta_alpaca_json(run_adapter) -> None:
    convs, rejects, _ = run_adapter("rosetta", "rosetta/rosetta_alpaca.json")
    (user, code), (_, code2) = turns(convs[0]), turns(convs[1])
    assert user == ("user", "Write a solution to the following Rosetta Code task in Python.\n\n"
                            "Compute the factorial of a number; see factorial.")
    assert code == ("assistant", "```python\ndef fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n```")
    assert code2[1].startswith("```cpp\n") and convs[1].meta["language"] == "C++"
    assert [(r.line, r.reason) for r in rejects] == [(12, "missing_language"), (17, "empty_content")]


def test_rosetta_folder_layout(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("rosetta", "rosetta")
    assert [c.id for c in convs] == ["rosetta/Hello-world-Text/Go/hello-world-text.go",
                                     "rosetta/Hello-world-Text/Python/hello-world-text-1.py",
                                     "rosetta/Hello-world-Text/Python/hello-world-text-2.py"]
    assert convs[0].messages[0].content == (
        'Write a solution to the Rosetta Code task "Hello world Text" in Go.\n\n'
        "Task:\nDisplay the string Hello world! on a text console.\n\n"
        "Related tasks:\n- Hello world/Graphical\n- Hello world programs")
    assert convs[2].messages[1].content == "```python\nimport sys\nsys.stdout.write('Hello world!\\n') \n```"
    assert "\u00a0" not in "".join(m.content for c in convs for m in c.messages)
    assert sorted((r.reason, r.file.rsplit("/", 1)[-1]) for r in rejects) == [
        ("missing_description", "no-description.py"), ("not_utf8", "binary-file.c")]
    assert adapter.stats.records == 5


def test_languages_option_rejects_the_others(run_adapter) -> None:
    convs, rejects, _ = run_adapter("rosetta", "rosetta/Task", languages="python")
    assert {c.meta["language"] for c in convs} == {"Python"}
    assert sorted(r.reason for r in rejects) == ["filtered_language", "filtered_language",
                                                 "missing_description"]


def test_single_task_folder_and_mixed_inputs_keep_order(run_adapter) -> None:
    convs, _, _ = run_adapter("rosetta", "rosetta/rosetta_alpaca.json", "rosetta/Task/Hello-world-Text")
    assert [c.meta["language"] for c in convs] == ["Python", "C++", "Go", "Python", "Python"]

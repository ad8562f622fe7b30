"""A loopback OpenAI-compatible server and scripted model answers for the webgen tests."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

SUBJECTS = [
    "navigation bar",
    "pricing table",
    "signup form",
    "photo gallery",
    "footer",
    "FAQ accordion",
    "product card",
    "login page",
    "dashboard sidebar",
    "blog layout",
    "contact form",
    "hero banner",
    "timeline",
    "testimonial slider",
    "cookie notice",
    "search box",
    "modal window",
    "tab panel",
]
STYLES = ["responsive", "accessible", "dark themed", "minimal", "animated", "keyboard friendly", "compact"]
VERBS = ["Create", "Build", "Write", "Design", "Code", "Make"]
EXTRAS = [
    "for a bakery",
    "for a travel blog",
    "for a bank",
    "for a chess club",
    "for a museum",
    "for a gym",
    "for a podcast",
    "for an airline",
    "for a school",
    "for a bike shop",
]
FEATURES = [
    "a sticky header",
    "rounded corners",
    "a hover shadow",
    "two columns on desktop",
    "a print style",
    "large touch targets",
    "an error state",
    "a loading state",
    "a skip link",
    "visible focus rings",
    "lazy loaded images",
    "a collapsible menu",
    "smooth scrolling",
    "a gradient border",
    "CSS variables",
]


def block(n: int, instruction: str, output: str, inp: str = "<noinput>") -> str:
    return f"{n}. Instruction: {instruction}\n{n}. Input:\n{inp}\n{n}. Output:\n{output}\n###\n"


def fake_answer(seed: int, start: int = 4, count: int = 12) -> str:
    """A plausible numbered list whose items depend only on `seed`; some items are near-duplicates."""
    rng = random.Random(seed)
    parts = []
    for n in range(start, start + count):
        subject = rng.choice(SUBJECTS)
        inst = (
            f"{rng.choice(VERBS)} a {rng.choice(STYLES)} {subject} {rng.choice(EXTRAS)} "
            f"with {rng.choice(FEATURES)} and {rng.choice(FEATURES)}."
        )
        if rng.random() < 0.3 and parts:  # a near-duplicate of the previous item
            inst = parts[-1].split("Instruction: ", 1)[1].split("\n", 1)[0].replace(" a ", " one ", 1)
        out = f'<section class="demo">\n  <h2>{subject.title()}</h2>\n  <p>Example {n}.</p>\n</section>'
        parts.append(block(n, inst, out))
    return "".join(parts)


def chat_reply(text: str, finish: str = "stop") -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }


def completion_reply(text: str, finish: str = "stop") -> dict:
    return {
        "id": "x",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
    }


def json_response(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    """A threaded loopback server (so concurrent requests really overlap)."""
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    if srv.is_running():
        srv.stop()


@pytest.fixture
def seeded_server(server: HTTPServer) -> Callable[..., HTTPServer]:
    """Serve answers that are a pure function of the request's seed (a deterministic model)."""

    def install(delay: bool = False, count: int = 12) -> HTTPServer:
        def handler(request: Request) -> Response:
            body = request.get_json()
            if delay:  # finish out of order when requests overlap
                import time

                time.sleep(random.Random(body["seed"]).random() * 0.03)
            return json_response(chat_reply(fake_answer(body["seed"], count=count)))

        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(handler)
        return server

    return install

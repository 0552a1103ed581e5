#!/usr/bin/env bash
# Everything a short GPU loan should measure, in one command, most valuable first, each step under its own time
# limit and writing into $OUT as it goes (a step that runs out of time leaves what it wrote):
#
#   1. svi_train.py --cuda on MNIST: 2 epochs, --resume to 3, evaluate.py --cuda; the run folder comes back, so
#      the GPU's checkpoint can be resumed on a CPU afterwards (python scripts/svi_train.py --resume RUN ...)
#   2. throughput.py --cuda --compile: eager, compiled (inductor, in CUDA graphs) and plain steps at batch 256 and
#      1,024, an MNIST epoch; then the importance-sampled log p(x), K = 5,000 on the 10,000 test images, and its
#      peak memory
#   3. the CUDA variants of the tests (-k cuda), then the whole suite while time is left
#
# On the lent machine (see the shared gpu/README.md: stage .device/ first, and pass it along; add pytest-xdist
# there too, or the tests run in one process: pip download --no-deps pytest-xdist execnet -d .device/):
#   . .device/setup.sh && bash benchmarks/gpu_session.sh
# Limits in seconds: GPU_SESSION_LIMITS="train throughput evaluation cuda_tests all_tests" (default
# "90 170 60 120 90": 530 s, inside one 600 s command).
set -u
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
read -r RUN_S THROUGHPUT_S EVAL_S CUDA_TESTS_S ALL_TESTS_S <<<"${GPU_SESSION_LIMITS:-90 170 60 120 90}"
PYTHON=${PYTHON:-python3}
WORKERS=()  # pyproject's addopts ask for pytest-xdist; without it, one process
"$PYTHON" -c "import xdist" 2>/dev/null || WORKERS=(-o addopts=)

step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.log, its exit status in $OUT/status.txt
    local name=$1 seconds=$2
    shift 2
    local tic=$SECONDS
    timeout --signal=TERM --kill-after=10 "$seconds" "$@" >"$OUT/$name.log" 2>&1
    echo "$name exit $? after $((SECONDS - tic)) s (limit $seconds s)" | tee -a "$OUT/status.txt"
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PYTHON" -c "import torch, pyro; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pyro', pyro.__version__)"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step train "$RUN_S" bash -c "
    $PYTHON scripts/svi_train.py --cuda --dataset mnist --epochs 2 --no-progress --out $OUT/run &&
    $PYTHON scripts/svi_train.py --resume $OUT/run --epochs 3 --no-progress &&
    $PYTHON scripts/evaluate.py $OUT/run --cuda --samples 1000 --images 1000"
step throughput "$THROUGHPUT_S" "$PYTHON" benchmarks/throughput.py --cuda --compile \
    --estimators trace meanfield iwae --batch-sizes 256 1024 --epoch --scratch /tmp/throughput-runs \
    --json "$OUT/throughput.json"
step evaluation "$EVAL_S" "$PYTHON" benchmarks/throughput.py --cuda --estimators trace --batch-sizes 256 \
    --repeats 1 --eval --eval-samples 5000 --eval-images 10000 --eval-repeats 2 --json "$OUT/evaluation.json"
step cuda_tests "$CUDA_TESTS_S" "$PYTHON" -m pytest "${WORKERS[@]}" -q -x -p no:cacheprovider -k cuda tests/ \
    --junitxml "$OUT/cuda-tests.xml"
step all_tests "$ALL_TESTS_S" "$PYTHON" -m pytest "${WORKERS[@]}" -q -x -p no:cacheprovider -k "not notebook" tests/ \
    --junitxml "$OUT/all-tests.xml"
cat "$OUT/status.txt"

#!/usr/bin/env bash
# Everything a short GPU loan should measure, in one command, each step under its own time limit, writing as it
# goes into a work folder that is packed into $OUT/session.tgz after every step (a step that runs out of time
# leaves what it wrote; the lending tool brings back at most 8 files):
#
#   1. train: svi_train.py --cuda on MNIST, 2 epochs, --resume to 3, evaluate.py --cuda; that GPU run resumed on
#      the CPU (--no-cuda), and a CPU run made elsewhere (.device/cpu-run, if staged) resumed on the GPU (--cuda)
#   2. throughput: every estimator's eager step against plain PyTorch at batch 256 and 1,024 with peak memory,
#      an MNIST epoch, and the importance-sampled log p(x) at K = 5,000 on the 10,000 test images
#   3. cuda_tests: the CUDA variants of the test suite (-k cuda)
#   4. compiled: throughput.py --compile (inductor's kernels in CUDA graphs) for trace and iwae, and the epoch
#   5. cpu_tests: the rest of the suite, while 6 runs beside it
#   6. paper_run: reproduce_iwae.py --cuda --compile --paper-recipe --epochs 3280 --batch-size 20 for as long as
#      its limit allows (SIGTERM writes its checkpoint), then evaluate.py at K = 5,000; packed into
#      $OUT/paper-run.tgz. Unpacked into .device/paper-run before a later loan, it is resumed there instead.
# GPU_SESSION_LIMITS with cpu_tests 0 stops after step 4 (a short second call).
#
# On the lent machine (stage .device/ first: see the shared gpu/README.md):
#   . .device/setup.sh && bash benchmarks/gpu_session.sh
# Limits in seconds: GPU_SESSION_LIMITS="train throughput cuda_tests compiled cpu_tests" (default
# "90 70 80 100 130": with the set-up and the paper run's evaluation about 540 s, inside one 600 s command); the
# paper run shares cpu_tests' time. Each pytest worker compiles in its own process (TORCHINDUCTOR_COMPILE_THREADS=1).
set -u
OUT=${OUT:-/tmp/gpu-session}
WORK=${GPU_SESSION_WORK:-$(mktemp -d /tmp/gpu-work.XXXXXX)}  # fresh each time: a warm machine keeps /tmp
mkdir -p "$OUT" "$WORK"
read -r TRAIN_S THROUGHPUT_S CUDA_TESTS_S COMPILED_S CPU_TESTS_S <<<"${GPU_SESSION_LIMITS:-90 70 80 100 130}"
PYTHON=${PYTHON:-python3}
WORKERS=$(($(nproc) > 2 ? $(nproc) - 2 : 1))
PYTEST=(env TORCHINDUCTOR_COMPILE_THREADS=1 "$PYTHON" -m pytest -q -p no:cacheprovider --ignore tests/test_notebooks.py --maxfail 30 -rfE --durations 25)
"$PYTHON" -c "import xdist" 2>/dev/null && PYTEST+=(-n "$WORKERS" --dist load) || PYTEST+=(-o addopts=)
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout 240)

pack() {  # logs, tables and test reports into $OUT/session.tgz, the GPU run's files into run.tgz, after every step
    (cd "$WORK" && find . -path ./scratch -prune -o -path ./paper-run -prune -o -type f \( -name '*.log' -o \
        -name '*.json' -o -name '*.jsonl' -o -name '*.xml' -o -name '*.txt' \) -print | tar czf "$OUT/session.tgz" -T -)
    [ -f "$WORK/run/checkpoint.pt" ] && tar czf "$OUT/run.tgz" -C "$WORK" run/checkpoint.pt run/config.json run/metrics.jsonl
    cp "$WORK/status.txt" "$OUT/status.txt"
}

step() {  # step NAME SECONDS COMMAND...: its output in NAME.log, its exit status in status.txt; SIGINT at the
    local name=$1 seconds=$2  # limit, so pytest still writes its summary and junit file
    shift 2
    local tic=$SECONDS
    timeout --signal=INT --kill-after=20 "$seconds" "$@" >"$WORK/$name.log" 2>&1
    echo "$name exit $? after $((SECONDS - tic)) s (limit $seconds s)" | tee -a "$WORK/status.txt"
    pack
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PYTHON" -c "import sys, torch, pyro; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'pyro', pyro.__version__)"
    echo "cores $(nproc); pytest: ${PYTEST[*]}"
} >"$WORK/machine.txt" 2>&1
cp "$WORK/machine.txt" "$OUT/"
cat "$WORK/machine.txt"

train() {
    set -e
    $PYTHON scripts/svi_train.py --cuda --dataset mnist --epochs 2 --no-progress --out "$WORK/run"
    $PYTHON scripts/svi_train.py --resume "$WORK/run" --epochs 3 --no-progress
    $PYTHON scripts/evaluate.py "$WORK/run" --cuda --samples 1000 --images 1000
    cp -r "$WORK/run" "$WORK/run-on-cpu"
    $PYTHON scripts/svi_train.py --resume "$WORK/run-on-cpu" --no-cuda --epochs 4 --no-progress
    if [ -d .device/cpu-run ]; then
        cp -r .device/cpu-run "$WORK/cpu-run-on-gpu"
        $PYTHON scripts/svi_train.py --resume "$WORK/cpu-run-on-gpu" --cuda --data-dir "$PYRO_VAE_DATA" --epochs 2 \
            --no-progress
    fi
}
export -f train
export PYTHON WORK
step train "$TRAIN_S" bash -c train
step throughput "$THROUGHPUT_S" "$PYTHON" benchmarks/throughput.py --cuda \
    --estimators trace meanfield iwae stl dreg miwae piwae ciwae --batch-sizes 256 1024 --epoch \
    --eval --eval-samples 5000 --eval-images 10000 --eval-repeats 2 --scratch "$WORK/scratch" \
    --json "$WORK/throughput.json"
step cuda_tests "$CUDA_TESTS_S" "${PYTEST[@]}" -k "cuda" tests/ --junitxml "$WORK/cuda-tests.xml"
step compiled "$COMPILED_S" "$PYTHON" benchmarks/throughput.py --cuda --compile --estimators trace iwae \
    --batch-sizes 256 1024 --epoch --epoch-repeats 2 --scratch "$WORK/scratch" --json "$WORK/compiled.json"

[ "$CPU_TESTS_S" -gt 0 ] || { cat "$WORK/status.txt"; exit 0; }  # a short loan: stop before the suite
if [ -d .device/paper-run ]; then  # a paper run brought back from an earlier loan goes on where it stopped
    cp -r .device/paper-run "$WORK/paper-run"
    PAPER=(--resume "$WORK/paper-run" --data-dir "$PYRO_VAE_DATA")
else
    PAPER=(--cuda --compile --paper-recipe --epochs 3280 --batch-size 20 --eval-samples 5000 --out "$WORK/paper-run")
fi
timeout --signal=TERM --kill-after=20 "$((CPU_TESTS_S - 25))" "$PYTHON" benchmarks/reproduce_iwae.py "${PAPER[@]}" \
    >"$WORK/paper-run.log" 2>&1 &
paper=$!
step cpu_tests "$CPU_TESTS_S" "${PYTEST[@]}" -k "not cuda" tests/ --junitxml "$WORK/cpu-tests.xml"
wait "$paper"
echo "paper_run exit $? ($(wc -l <"$WORK/paper-run/metrics.jsonl" 2>/dev/null || echo 0) epochs)" | tee -a "$WORK/status.txt"
timeout 30 "$PYTHON" scripts/evaluate.py "$WORK/paper-run" --cuda --samples 5000 >>"$WORK/paper-run.log" 2>&1
echo "paper_run evaluation exit $?" | tee -a "$WORK/status.txt"
tar czf "$OUT/paper-run.tgz" -C "$WORK" paper-run paper-run.log 2>/dev/null
pack
cat "$WORK/status.txt"

#!/usr/bin/env bash
# Everything adamkit's GPU work must show (issue 23, item 6), in under 8 minutes, written under $OUT:
#   env            nvidia-smi, torch / CUDA / triton / driver versions, the packages (env.json, nvidia-smi.txt)
#   tests          every golden case on the CUDA paths loop, foreach and triton; the Triton kernel against the
#                  CUDA loop and against the interpreter's bits
#   tests-compiled every golden case on the compiled path (inductor), and the compiled path against the loop
#   speed          adamkit speed --device cuda: every algorithm's default, foreach and triton paths against
#                  torch's fused AdamW on resnet18, many-small, one-big and decoder-1b; the HBM roofline; peak
#                  memory per step; int8 and bfloat16 state against float32 state on one-big (speed.json)
#   speed-compiled the compiled path of AdamW on one-big and resnet18 (speed-compiled.json)
#   bf16           bfloat16 parameters with param_rounding="stochastic" against float32 parameters (bf16.json)
#   readme         README.md: the machine, each section's exit, the tests, every table, each target met or not
# Each section runs under `timeout` (its own limit, and never past the run's deadline: GPU_CHECK_SECONDS, 465 by
# default); a section cut short leaves its log, and the speed JSON keeps its finished layouts.
#
# usage: scripts/gpu_check.sh                 OUT=dir to choose the folder (default results/<date>-gpu)
#        scripts/gpu_check.sh --collect-only  list the CUDA tests it runs (works without a GPU)
# PYTHON chooses the interpreter (default: .venv/bin/python where present, else python3).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$ROOT/src:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"

# the pytest selections (CUDA tests skip without a device, so they are collected anywhere)
TESTS=(tests/test_golden.py::test_golden_replay_cuda
       tests/kernels/test_triton.py::test_cuda_agrees_with_the_cuda_loop
       tests/kernels/test_triton.py::test_cuda_kernels_compute_the_interpreters_bits
       -k "not compiled")
TESTS_COMPILED=(tests/test_golden.py::test_golden_replay_cuda
                tests/kernels/test_compiled.py::test_cuda_fused_is_compiled_and_matches
                -k "compiled")
SPEED=(--device cuda --layouts resnet18,many-small,one-big,decoder-1b --paths default,foreach,triton
       --state-layouts one-big --state-paths default,triton --state-dtypes float32,bfloat16,int8
       --repeats 3 --steps 5)
SPEED_COMPILED=(--device cuda --algorithms adamw --layouts one-big,resnet18 --paths compiled --state-dtypes ''
                --repeats 3 --steps 5)

if [ "${1:-}" = "--collect-only" ]; then
    rc=0
    for name in TESTS TESTS_COMPILED; do
        declare -n sel=$name
        echo "== $name"
        "$PY" -m pytest --collect-only -q -p no:cacheprovider "${sel[@]}" || rc=$?
    done
    exit $rc
elif [ $# -gt 0 ]; then
    echo "gpu_check.sh: unknown argument $1 (usage: scripts/gpu_check.sh [--collect-only]; OUT=dir)" >&2
    exit 2
fi

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False with $PY): run it on a machine" \
         "with an NVIDIA GPU and a CUDA build of torch (--collect-only lists its tests anywhere)" >&2
    exit 2
fi
unset TRITON_INTERPRET  # compiled Triton kernels on the GPU, not the interpreter

OUT=${OUT:-results/$(date +%F)-gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT PY
END=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-465} ))
RESERVE=15  # seconds kept for the README
: > "$OUT/sections.tsv"

# section NAME LIMIT COMMAND...: COMMAND under timeout (LIMIT, or less to keep the deadline), its output in
# NAME.log, a line NAME<TAB>exit<TAB>seconds<TAB>limit in sections.tsv
section() {
    local name=$1 limit=$2 start left rc
    shift 2
    start=$(date +%s)
    left=$(( END - start - RESERVE ))
    [ "$name" = readme ] && left=$(( END - start + RESERVE ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        echo "[$name] skipped: no time left before the deadline" | tee "$OUT/$name.log"
        printf '%s\tskipped\t0\t0\n' "$name" >> "$OUT/sections.tsv"
        return
    fi
    echo "[$name] up to ${limit}s ..."
    timeout -k 3 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" >> "$OUT/sections.tsv"
    echo "[$name] exit $rc after $(( $(date +%s) - start ))s ($OUT/$name.log)"
    tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
}

section env 20 bash -c '
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
    "$PY" -m adamkit.bench.speed_cuda env > "$OUT/env.json" && cat "$OUT/env.json"
    "$PY" -m pip list --format=freeze > "$OUT/packages.txt" 2>/dev/null
    true'
section tests 100 "$PY" -m pytest -v -rs -p no:cacheprovider "${TESTS[@]}"
section tests-compiled 75 "$PY" -m pytest -v -rs -p no:cacheprovider "${TESTS_COMPILED[@]}"
section speed 150 "$PY" -m adamkit speed "${SPEED[@]}" --json "$OUT/speed.json"
section speed-compiled 50 "$PY" -m adamkit speed "${SPEED_COMPILED[@]}" --json "$OUT/speed-compiled.json"
section bf16 40 "$PY" -m adamkit.bench.speed_cuda bf16 --device cuda --json "$OUT/bf16.json"
section readme 15 "$PY" -m adamkit.bench.speed_cuda readme "$OUT"
echo "results: $OUT/README.md"

#!/usr/bin/env bash
# The GPU tier of adamkit bench in one prepared command (`make gpu-bench`):
#   1. record the environment (GPU, driver, CUDA, torch, adamkit, commit, CPU cores, memory);
#   2. check that torch sees the GPU and that the task data is in the cache (checksums verified);
#   3. run the GPU tests of tests/bench/test_devices.py (a task on cuda against the CPU, repeatability);
#   4. run the `gpu_smoke` suite, then the `gpu` suite, on --device cuda, within --time-limit seconds in all
#      (a sweep cut by the limit is interrupted cleanly: its store resumes at the next sitting);
#   5. write each suite's report (`adamkit bench report`) and the measured cost per task (costs.txt).
#
# usage: scripts/gpu_bench.sh [--time-limit SECONDS] [--jobs N] [--device cuda|cuda:N] [--skip-smoke] [--check]
#   --time-limit  seconds for both sweeps together, reports excluded (default 480)
#   --jobs        runs at once, sharing the GPU (default: the CPU count minus 2, between 2 and 14)
#   --check       steps 1-3 only
# Environment: OUT (the results folder; default results/<UTC date>-gpu-bench), PYTHON (default .venv/bin/python
# when it exists, else python3), ADAMKIT_DATA_DIR (the data cache; no network is needed when it holds the data),
# SUITES (default "gpu_smoke gpu": shipped names or TOML files, run in that order; --skip-smoke drops gpu_smoke).
# --device cpu runs the same steps on the CPU (a dry run of the script itself: no GPU check, no GPU tests).
# Exit status: 0 when every step ran (a sweep cut by the time limit included), 2 when the GPU or the data is
# missing, else the status of the first step that failed.
set -uo pipefail

TIME_LIMIT=480
DEVICE=cuda
SKIP_SMOKE=0
CHECK_ONLY=0
NPROC=$(nproc 2>/dev/null || echo 4)
JOBS=$(( NPROC - 2 ))
(( JOBS < 2 )) && JOBS=2
(( JOBS > 14 )) && JOBS=14

while (( $# )); do
    case "$1" in
        --time-limit) TIME_LIMIT="${2:?--time-limit needs a number of seconds}"; shift 2 ;;
        --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
        --device) DEVICE="${2:?--device needs cuda or cuda:N}"; shift 2 ;;
        --skip-smoke) SKIP_SMOKE=1; shift ;;
        --check) CHECK_ONLY=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "gpu_bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$TIME_LIMIT" =~ ^[0-9]+$ ]] || (( TIME_LIMIT < 60 )); then
    echo "gpu_bench.sh: --time-limit must be a whole number of seconds >= 60, got $TIME_LIMIT" >&2; exit 2
fi
if ! [[ "$JOBS" =~ ^[0-9]+$ ]] || (( JOBS < 1 )); then
    echo "gpu_bench.sh: --jobs must be a whole number >= 1, got $JOBS" >&2; exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
SUITES="${SUITES:-gpu_smoke gpu}"
(( SKIP_SMOKE )) && SUITES="${SUITES//gpu_smoke/}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# this tree's adamkit (and the tests' helpers), whatever the interpreter has installed
export PYTHONPATH="$ROOT/src:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
DEST="${OUT:-results/$(date -u +%Y-%m-%d)-gpu-bench}"
mkdir -p "$DEST" || { echo "gpu_bench.sh: cannot create $DEST" >&2; exit 2; }
LOG="$DEST/gpu_bench.log"
START=$SECONDS
say() { echo "[gpu_bench $(( SECONDS - START ))s] $*" | tee -a "$LOG"; }
adamkit() { "$PYTHON" -m adamkit "$@"; }

# ---------------------------------------------------------------------------------------------- 1. environment
{
    echo "date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (working tree differs)')"
    echo "cpu cores: $NPROC; jobs: $JOBS; device: $DEVICE; time limit: ${TIME_LIMIT}s"
    echo "memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "python: $PYTHON ($("$PYTHON" --version 2>&1))"
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "nvidia-smi:"
        nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv 2>&1 | sed 's/^/  /'
    else
        echo "nvidia-smi: not found"
    fi
    "$PYTHON" - <<'EOF' 2>&1
import platform
try:
    import torch
    print(f"torch: {torch.__version__}; CUDA build: {torch.version.cuda}; cuDNN: "
          f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}; "
          f"CUDA available: {torch.cuda.is_available()}; devices: {torch.cuda.device_count()}")
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
except Exception as exc:  # the record says what is wrong; the check below refuses
    print(f"torch: cannot be imported ({type(exc).__name__}: {exc})")
try:
    import adamkit
    print(f"adamkit: {adamkit.__version__} ({adamkit.__file__})")
except Exception as exc:
    print(f"adamkit: cannot be imported ({type(exc).__name__}: {exc})")
print(f"platform: {platform.platform()}")
EOF
} > "$DEST/environment.txt"
cat "$DEST/environment.txt" >> "$LOG"
say "environment recorded in $DEST/environment.txt"

# ---------------------------------------------------------------------------------------------- 2. checks
if [[ "$DEVICE" == cpu ]]; then
    say "--device cpu: a dry run of this script on the CPU (no GPU check, no GPU tests)"
elif ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_bench.sh: no CUDA device is available to torch in $PYTHON (see $DEST/environment.txt); run this on a" \
         "machine with an NVIDIA GPU and a CUDA build of torch (PYTHON=... to choose the interpreter)" >&2
    exit 2
fi
adamkit data prepare fashion-mnist shakespeare >> "$LOG" 2>&1
if ! "$PYTHON" - <<'EOF' >> "$LOG" 2>&1
import sys
from adamkit.bench.data.store import locate
for name in ("fashion-mnist", "shakespeare"):
    locate(name)  # present and matching its pinned sha256, else raises
print("data: fashion-mnist and shakespeare present, checksums verified")
EOF
then
    echo "gpu_bench.sh: the task data is missing or damaged in the cache (see $LOG); run \`adamkit data prepare" \
         "fashion-mnist shakespeare\` where there is a network, and copy the cache here (ADAMKIT_DATA_DIR)" >&2
    exit 2
fi
say "GPU and data present"

# ---------------------------------------------------------------------------------------------- 3. GPU tests
if [[ "$DEVICE" == cpu ]]; then
    :
elif "$PYTHON" -c "import pytest" 2>/dev/null; then
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/bench/test_devices.py -k cuda > "$DEST/gpu_tests.txt" 2>&1
    rc=$?
    say "GPU tests: $(tail -n 1 "$DEST/gpu_tests.txt") (exit $rc; $DEST/gpu_tests.txt)"
    if (( rc != 0 )); then
        echo "gpu_bench.sh: the GPU tests failed (see $DEST/gpu_tests.txt); the sweeps are not run" >&2
        exit "$rc"
    fi
else
    say "pytest is not installed: GPU tests skipped"
fi
(( CHECK_ONLY )) && { say "--check: done"; exit 0; }

# the GAN tasks' feature classifier: trained once (on the CPU) and cached before the workers need it
"$PYTHON" -c "from adamkit.bench.tasks.gan import feature_classifier; feature_classifier()" >> "$LOG" 2>&1 \
    || say "warning: the GAN feature classifier could not be prepared in advance (each worker trains it)"

# ---------------------------------------------------------------------------------------------- 4. sweeps
DEADLINE=$(( START + TIME_LIMIT ))
STATUS=0
name_of() { local base; base="$(basename "$1")"; echo "${base%.toml}"; }
# sweep SUITE: run it until the deadline. It starts no run in the last minute (--time-limit: the runs under way
# finish and are stored, exit 3); `timeout` interrupts it at the deadline itself (130: the runs in flight are lost).
# A sweep stopped either way is not a failure: its store resumes.
sweep() {
    local spec="$1" suite left=$(( DEADLINE - SECONDS )) soft
    suite="$(name_of "$spec")"
    if (( left < 30 )); then
        say "$suite: not started (${left}s left of the time limit); run this script again to go on"
        return 0
    fi
    soft=$(( left > 120 ? left - 60 : left / 2 ))
    say "$suite: adamkit bench run $suite --device $DEVICE --jobs $JOBS --time-limit $soft (at most ${left}s)"
    timeout --signal=INT --kill-after=120 "$left" \
        "$PYTHON" -m adamkit bench run "$spec" --out "$DEST/$suite" --device "$DEVICE" --jobs "$JOBS" \
        --time-limit "$soft" > "$DEST/$suite.run.txt" 2>&1
    local rc=$?
    case $rc in
        0) say "$suite: complete" ;;
        3) say "$suite: stopped at the time limit, every run started is stored (run this script again to go on)" ;;
        124|130) say "$suite: cut by the time limit (its store resumes: run this script again)" ;;
        *) say "$suite: exit $rc (see $DEST/$suite.run.txt)"; (( STATUS == 0 )) && STATUS=$rc ;;
    esac
    tail -n 25 "$DEST/$suite.run.txt" >> "$LOG"
}
for spec in $SUITES; do
    sweep "$spec"   # sweep gpu_smoke, then sweep gpu
done

# ---------------------------------------------------------------------------------------------- 5. reports, costs
for spec in $SUITES; do
    suite="$(name_of "$spec")"
    [[ -f "$DEST/$suite/results.sqlite" ]] || continue
    if adamkit bench report "$DEST/$suite" > "$DEST/$suite.report.txt" 2>&1; then
        say "$suite: report in $DEST/$suite/report/"
    else
        say "$suite: the report failed (see $DEST/$suite.report.txt)"
        (( STATUS == 0 )) && STATUS=1
    fi
done
NAMES=""
for spec in $SUITES; do NAMES="$NAMES $(name_of "$spec")"; done
"$PYTHON" - "$DEST" $NAMES <<'EOF' > "$DEST/costs.txt" 2>&1
import json, statistics, sys
from pathlib import Path
from adamkit.bench.store import ResultStore

print("measured cost of the stored runs: task, device, runs, median seconds per run, median ms per step")
for suite in sys.argv[2:]:
    path = Path(sys.argv[1]) / suite / "results.sqlite"
    if not path.is_file():
        continue
    print(f"\n{suite}:")
    with ResultStore(path, create=False) as store:
        devs = store.run_devices()
        rows = {}
        for run in store.runs():
            if run["status"] != "done" or not run["seconds"]:
                continue
            steps = (run["final"] or {}).get("steps") or 0
            dev = (devs.get(run["hash"]) or {}).get("device", "cpu")
            rows.setdefault((run["problem"], dev), []).append((run["seconds"], 1000 * run["seconds"] / max(1, steps)))
        for (problem, dev), values in sorted(rows.items()):
            print(f"  {problem:<24} {dev:<8} {len(values):>5} {statistics.median(v[0] for v in values):>9.1f} s "
                  f"{statistics.median(v[1] for v in values):>9.2f} ms/step")
EOF
say "costs in $DEST/costs.txt"
say "done (exit $STATUS): $DEST"
exit "$STATUS"

#!/usr/bin/env bash
# Every benchmark at full size on one accelerator, each step under its own time
# limit; the limits add up to 6 minutes (360 s).
#
#   bash benchmarks/accelerator_suite.sh OUT_DIR            # all steps
#   STEPS="sorting relaxed_compile" bash benchmarks/accelerator_suite.sh OUT_DIR
#   python benchmarks/collect.py --from results/benchmarks --from OUT_DIR   # -> results/benchmarks.md
#
# Each step runs under its own `timeout` and writes OUT_DIR/<step>.out as it
# goes, headed by the command and the machine (collect.py's saved-output
# format), so a step that overruns leaves what it printed and the rest still
# run. OUT_DIR/suite.md gets one markdown row per step. PYTHON picks the
# interpreter (default python3).
set -uo pipefail
out="${1:?usage: accelerator_suite.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
steps="${STEPS:-device_tests sorting relaxed_compile train_step train_step_large trainer_overhead}"
machine=$("$py" - <<'PY'
import datetime, json, os, platform, socket
import jax
d = jax.devices()
print(json.dumps({"hostname": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
                  "cores": str(os.cpu_count()), "device": f"{d[0].device_kind} ({d[0].platform}) x{len(d)}",
                  "jax": jax.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}))
PY
)
echo "machine: $machine"
printf '| step | status | seconds | command |\n|---|---|---|---|\n' > "$out/suite.md"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local file="$out/$name.out" start=$SECONDS
  printf '# command: %s\n# machine: %s\n' "$*" "$machine" > "$file"
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$file"
  local rc=${PIPESTATUS[0]} status
  case $rc in 0) status=ok ;; 124|137) status="timeout after ${limit} s" ;; *) status="failed (exit $rc)" ;; esac
  echo "# status: $status in $((SECONDS - start)).0 s" >> "$file"
  printf '| %s | %s | %s | `%s` |\n' "$name" "$status" "$((SECONDS - start))" "$*" >> "$out/suite.md"
}

for s in $steps; do
  case $s in
    device_tests) step device_tests 60 "$py" -m pytest -q -p no:cacheprovider tests/ops/test_isotonic.py ;;
    sorting) step sorting 120 "$py" benchmarks/sorting.py --cell_timeout 30 --repeats 5 ;;
    relaxed_compile) step relaxed_compile 60 "$py" benchmarks/relaxed_compile.py --timeout 15 --variants "dot/scan,reduce/scan,reduce/unrolled" ;;
    train_step) step train_step 30 "$py" benchmarks/train_step.py --batch 4096 ;;
    train_step_large) step train_step_large 30 "$py" benchmarks/train_step.py --batch 65536 ;;
    trainer_overhead) step trainer_overhead 60 "$py" benchmarks/trainer_overhead.py ;;
    *) echo "unknown step $s" >&2 ;;
  esac
done
cat "$out/suite.md"

#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR — the GPU half's first-contact check (docs/gpu.md "Running the GPU check"): on a machine
# with an NVIDIA GPU, in about 8 minutes (H100/H200-class GPU, 16 cores), it
#   1. records nvidia-smi, the driver and CUDA versions;
#   2. builds hetmoe and the GPU tests for this GPU's architecture only;
#   3. runs the quantized-KV-cache GPU tests first (test_cuda_kernels and test_gpu_forward, filtered; their agreement
#      lines in OUTDIR/kvq_agreement.txt), then HETMOE_REQUIRE_GPU=1 ctest -L gpu (a GPU that cannot be used fails
#      the tests instead of skipping them);
#   4. runs eval --device gpu on the fixture (tests/data) all-GPU, hybrid (half the experts), --cpu-moe and all-GPU
#      with a q8_0 KV cache, each with KL p50 / p99 against the f32 reference logits (the fixture bar: p50 ≤ 1e-3,
#      p99 over confident positions ≤ 5e-3);
#   5. synthesizes gpt-oss-20b and benches it: decode all-GPU with the roofline fraction (bytes per token × tok/s ÷
#      the GPU read bandwidth hetmoe probe measures), all-GPU with a q8_0 KV cache at depths 0 and 4096, hybrid at 8
#      and 6 GiB of VRAM with 16 and 8 threads, the same with --no-overlap (the overlap's speed-up), a --trace of the
#      hybrid with trace-summary's overlap efficiency per layer, and pp512 with every expert on the CPU (--cpu-moe);
# writing OUTDIR/gpu_check.log (every command and its output), OUTDIR/results.json, OUTDIR/summary.txt and the
# trace summary, and printing the summary at the end. Without a usable GPU it stops at step 1 with a message and
# exit status 1. Exit status: 0 when every step ran and passed, 1 otherwise (results.json says which step failed).
#
# Environment: HETMOE_GPU_CHECK_WORK (default /tmp/hetmoe-gpu-check): build tree and the 13 GB synthetic model;
# HETMOE_GPU_DEPS (default .gpu-deps in the repository): a folder of Debian packages (scripts/gpu_check_deps.sh) to
# unpack when the machine lacks the project's build dependencies (a CUDA image without them); HETMOE_GPU_CHECK_BUDGET_S
# (default 480): the time after which the remaining steps are skipped; HETMOE_GPU_CHECK_BUILD_TIMEOUT_S (default 300).
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu_check.sh OUTDIR" >&2
  exit 2
fi
OUT=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${HETMOE_GPU_CHECK_WORK:-/tmp/hetmoe-gpu-check}
DEPS=${HETMOE_GPU_DEPS:-$ROOT/.gpu-deps}
BUDGET_S=${HETMOE_GPU_CHECK_BUDGET_S:-480}
BUILD=$WORK/build
mkdir -p "$OUT" "$WORK" || { echo "gpu_check: cannot create $OUT or $WORK" >&2; exit 1; }
LOG=$OUT/gpu_check.log
STEPS=$WORK/steps.tsv   # step \t status \t detail
FIGURES=$WORK/figures.tsv  # key \t value
: >"$LOG"
: >"$STEPS"
: >"$FIGURES"
START=$(date +%s)

elapsed() { echo $(($(date +%s) - START)); }
log() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }
step() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STEPS"; log "step $1: $2${3:+ ($3)}"; }
figure() { printf '%s\t%s\n' "$1" "$2" >>"$FIGURES"; }
# run NAME TIMEOUT_S CMD...: runs CMD with its output in the log (and in $WORK/NAME.out); its exit status.
run() {
  local name=$1 limit=$2
  shift 2
  log "\$ $*"
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>&1
  local rc=$?
  cat "$WORK/$name.out" >>"$LOG"
  [ $rc -eq 124 ] && log "$name: timed out after ${limit}s"
  return $rc
}
time_left() { [ "$(elapsed)" -lt "$BUDGET_S" ]; }

write_results() {
  python3 - "$STEPS" "$FIGURES" "$OUT/results.json" "$(elapsed)" <<'EOF'
import json, sys
steps_path, figures_path, out_path, seconds = sys.argv[1:5]
steps = []
for line in open(steps_path):
    name, status, detail = (line.rstrip("\n").split("\t") + ["", ""])[:3]
    steps.append({"step": name, "status": status, "detail": detail})
figures = {}
for line in open(figures_path):
    key, value = line.rstrip("\n").split("\t", 1)
    try:
        figures[key] = float(value)
    except ValueError:
        figures[key] = value
ok = bool(steps) and all(s["status"] in ("passed", "ran") for s in steps)
json.dump({"ok": ok, "seconds": int(seconds), "steps": steps, "figures": figures}, open(out_path, "w"), indent=2)
EOF
}

print_summary() {
  {
    echo "== gpu_check summary ($(elapsed) s) =="
    awk -F'\t' '{ printf "  %-34s %-8s %s\n", $1, $2, $3 }' "$STEPS"
    echo "-- figures --"
    awk -F'\t' '{ printf "  %-44s %s\n", $1, $2 }' "$FIGURES"
  } | tee "$OUT/summary.txt" | tee -a "$LOG"
}

finish() {
  write_results
  print_summary
  if awk -F'\t' '$2 != "passed" && $2 != "ran" { bad = 1 } END { exit bad ? 0 : 1 }' "$STEPS"; then
    log "gpu_check: some steps failed or were skipped (results.json)"
    exit 1
  fi
  exit 0
}

fail_early() {
  step "$1" failed "$2"
  echo "gpu_check: $2" >&2
  finish
}

# ---- 1. the GPU, the driver, CUDA ----------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
  fail_early gpu "no nvidia-smi: no NVIDIA driver on this machine; gpu_check.sh needs a machine with a GPU"
run nvidia_smi 30 nvidia-smi || fail_early gpu "nvidia-smi failed (driver not loaded or no GPU): see gpu_check.log"
run gpu_query 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
  fail_early gpu "nvidia-smi --query-gpu failed"
IFS=',' read -r GPU_NAME DRIVER MEM_TOTAL CAP <"$WORK/gpu_query.out"
GPU_NAME=$(echo "$GPU_NAME" | xargs); DRIVER=$(echo "$DRIVER" | xargs); CAP=$(echo "$CAP" | xargs)
ARCH=${CAP/./}
figure gpu.name "$GPU_NAME"
figure gpu.driver "$DRIVER"
figure gpu.memory_total "$(echo "$MEM_TOTAL" | xargs)"
figure gpu.compute_capability "$CAP"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || fail_early gpu "no nvcc (CUDA toolkit) on this machine"
run nvcc_version 30 "$NVCC" --version
figure cuda.nvcc "$(grep -o 'release [0-9.]*' "$WORK/nvcc_version.out" | head -1)"
figure cpu.cores "$(nproc)"
[[ "$ARCH" =~ ^[0-9]+$ ]] || fail_early gpu "could not read the compute capability ('$CAP')"
step gpu ran "$GPU_NAME, sm_$ARCH, driver $DRIVER"

# ---- 2. build for this GPU only ------------------------------------------------------------------------------------
CMAKE_EXTRA=()
if ! pkg-config --exists hwloc tomlplusplus numa 2>/dev/null && [ -d "$DEPS" ]; then
  # A CUDA image without the project's Debian packages: unpack the carried ones (scripts/gpu_check_deps.sh) into a
  # prefix of their own (never into /).
  PREFIX=$WORK/deps-root
  mkdir -p "$PREFIX"
  for deb in "$DEPS"/*.deb; do dpkg -x "$deb" "$PREFIX" || log "could not unpack $deb"; done
  multiarch=
  for d in "$PREFIX"/usr/lib/*-linux-gnu; do [ -d "$d" ] && multiarch=$(basename "$d") && break; done
  export PKG_CONFIG_PATH=$PREFIX/usr/lib/$multiarch/pkgconfig:$PREFIX/usr/share/pkgconfig:$PREFIX/usr/lib/pkgconfig
  export LD_LIBRARY_PATH=$PREFIX/usr/lib/$multiarch:$PREFIX/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CPATH=$PREFIX/usr/include${CPATH:+:$CPATH}
  CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$PREFIX/usr;$PREFIX/usr/lib/$multiarch/cmake" "-DCMAKE_INCLUDE_PATH=$PREFIX/usr/include")
  log "unpacked the packages of $DEPS into $PREFIX"
fi
command -v ccache >/dev/null 2>&1 && CMAKE_EXTRA+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
run configure 120 cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DHETMOE_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${CMAKE_EXTRA[@]}" ||
  fail_early build "cmake configure failed (missing packages? see gpu_check.log; scripts/gpu_check_deps.sh)"
GPU_TESTS=(test_cuda_kernels test_cuda_device test_gpu_forward)
run build "${HETMOE_GPU_CHECK_BUILD_TIMEOUT_S:-300}" cmake --build "$BUILD" -j "$(nproc)" --target hetmoe "${GPU_TESTS[@]}" ||
  fail_early build "the build for sm_$ARCH failed: see gpu_check.log"
step build passed "hetmoe and ${GPU_TESTS[*]} for sm_$ARCH"
HETMOE=$BUILD/bin/hetmoe

# ---- 3a. first: the quantized KV cache (issue 14), written and compiled without a GPU and never run before --------
# kv_store's bit-exactness with the CPU cache, the decode/prefill kernels over q8_0/q4_0 blocks, then the GPU pass
# with a quantized cache against the fixture and against the CPU pass with the same cache.
if run kvq_kernels 180 env HETMOE_REQUIRE_GPU=1 "$BUILD/bin/test_cuda_kernels" \
    --gtest_filter='*KvStore*:*Attention*:*KvCacheLayout*'; then
  step kvq_kernels passed "$(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran.*' "$WORK/kvq_kernels.out" | tail -1)"
else
  step kvq_kernels failed "$(grep -E '^\[  FAILED  \]' "$WORK/kvq_kernels.out" | head -3 | tr '\n' ' ')"
fi
if run kvq_forward 240 env HETMOE_REQUIRE_GPU=1 "$BUILD/bin/test_gpu_forward" \
    --gtest_filter='*Quantized*:*Q8_0*'; then
  step kvq_forward passed "$(grep -E '^\[ agreement \]' "$WORK/kvq_forward.out" | head -1)"
else
  step kvq_forward failed "$(grep -E '^\[  FAILED  \]' "$WORK/kvq_forward.out" | head -3 | tr '\n' ' ')"
fi
grep -E '^\[ agreement \]' "$WORK/kvq_forward.out" >"$OUT/kvq_agreement.txt" 2>/dev/null

# ---- 3. the GPU tests, required to run --------------------------------------------------------------------------
if run ctest_gpu 240 env HETMOE_REQUIRE_GPU=1 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 120 -j 4
then
  step ctest_gpu passed "$(grep -Eo '[0-9]+% tests passed.*' "$WORK/ctest_gpu.out" | tail -1)"
else
  step ctest_gpu failed "$(grep -Eo '[0-9]+% tests passed.*' "$WORK/ctest_gpu.out" | tail -1)"
fi
figure ctest_gpu.result "$(grep -Eo '[0-9]+% tests passed.*' "$WORK/ctest_gpu.out" | tail -1)"

# ---- 4. the fixture through eval --device gpu, KL against the f32 reference ------------------------------------
DATA=$ROOT/tests/data
kl() {  # kl NAME LOGITS: KL(reference ‖ LOGITS) p50 over all positions, p99 over router margin ≥ 0.15
  python3 - "$DATA/gpt-oss-tiny.reference.logits.f32" "$2" "$DATA/gpt-oss-tiny.router-margin.txt" <<'EOF'
import array, math, sys
ref_path, our_path, margin_path = sys.argv[1:4]
vocab = 4106
def read(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a
ref, ours = read(ref_path), read(our_path)
margins = [float(x) for x in open(margin_path).read().split()]
if len(ref) != len(ours):
    sys.exit(f"{our_path}: {len(ours)} floats, the reference has {len(ref)}")
def lse(x):
    m = max(x)
    return m + math.log(sum(math.exp(v - m) for v in x))
def pct(v, q):  # numpy's linear percentile, as tests/logit_metrics.h
    v = sorted(v)
    if not v:
        return 0.0
    r = q / 100 * (len(v) - 1)
    lo = int(math.floor(r)); hi = min(lo + 1, len(v) - 1)
    return v[lo] + (r - lo) * (v[hi] - v[lo])
kls, confident = [], []
for p in range(len(ref) // vocab):
    r = ref[p * vocab:(p + 1) * vocab]; o = ours[p * vocab:(p + 1) * vocab]
    lr, lo_ = lse(r), lse(o)
    k = max(0.0, sum(math.exp(a - lr) * ((a - lr) - (b - lo_)) for a, b in zip(r, o)))
    kls.append(k)
    if p < len(margins) and margins[p] >= 0.15:
        confident.append(k)
print(f"{pct(kls, 50):.3g} {pct(confident, 99):.3g}")
EOF
}
for config in "all-gpu:--n-gpu-experts 8" "hybrid-half:--n-gpu-experts 4" "cpu-moe:--cpu-moe" \
              "all-gpu-kv-q8_0:--n-gpu-experts 8 --kv-type q8_0"; do
  name=${config%%:*}
  flags=${config#*:}
  time_left || { step "eval_$name" skipped "time budget"; continue; }
  # shellcheck disable=SC2086  # flags are words
  if run "eval_$name" 120 "$HETMOE" eval -m "$DATA/gpt-oss-tiny.gguf" --ids "$DATA/gpt-oss-tiny.ids.txt" \
      --logits-out "$WORK/$name.logits.f32" -t 4 -c 256 --device gpu $flags; then
    if read -r p50 p99 < <(kl "$name" "$WORK/$name.logits.f32") && [ -n "${p99:-}" ]; then
      figure "eval.$name.kl_p50" "$p50"
      figure "eval.$name.kl_p99_confident" "$p99"
      if python3 -c "import sys; sys.exit(0 if $p50 <= 1e-3 and $p99 <= 5e-3 else 1)"; then
        step "eval_$name" passed "KL p50 $p50, p99 $p99"
      else
        step "eval_$name" failed "KL p50 $p50, p99 $p99 over the bar (1e-3, 5e-3)"
      fi
    else
      step "eval_$name" failed "KL could not be computed"
    fi
  else
    step "eval_$name" failed "eval failed: see gpu_check.log"
  fi
done

# ---- 5. the synthetic gpt-oss-20b: decode all-GPU, hybrid, overlap, trace; pp512 with CPU experts -------------
MODEL=$WORK/gpt-oss-20b.gguf
if ! time_left; then
  step synth skipped "time budget"
elif [ -s "$MODEL" ] || run synth 240 "$HETMOE" synth --preset gpt-oss-20b --seed 1 -o "$MODEL"; then
  step synth ran "$(du -h "$MODEL" | cut -f1)"
else
  step synth failed "synth gpt-oss-20b failed: see gpu_check.log"
fi
bench_json() {  # bench_json NAME KEYPREFIX: figures from a bench -o json output
  python3 - "$WORK/$1.out" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
start = text.find("[")
rows = json.loads(text[start:text.rfind("]") + 1]) if start >= 0 else []
for r in rows:
    kind = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    if r.get("n_depth"):
        kind += f".d{r['n_depth']}"
    key = f"{sys.argv[2]}.t{r['n_threads']}.{kind}"
    print(f"{key}.tok_s\t{r['avg_ts']:.2f}")
    if r.get("bytes_per_token"):
        print(f"{key}.bytes_per_token\t{r['bytes_per_token']}")
    print(f"{key}.backend\t{r['backend']}")
EOF
}
if [ -s "$MODEL" ]; then
  # The GPU's read bandwidth, the roof of a decode that reads its weights from VRAM.
  if time_left && run probe 120 "$HETMOE" probe --json --force; then
    gpu_bw=$(python3 -c "import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.find('{'):]); g=j.get('gpu') or {}; print(g.get('memory_read_bytes_per_s', 0))" "$WORK/probe.out" 2>/dev/null || echo 0)
    figure probe.gpu_read_bytes_per_s "$gpu_bw"
    step probe ran "GPU read $(python3 -c "print(f'{float($gpu_bw)/1e9:.0f}')") GB/s"
  else
    gpu_bw=0
    step probe failed "hetmoe probe failed: see gpu_check.log"
  fi
  BENCH=("$HETMOE" bench -m "$MODEL" -o json -r 2)
  declare -A RUNS=(
    [bench_all_gpu]="-p 0 -n 32 -t 16 --device gpu --n-gpu-experts 32"
    [bench_hybrid_8g]="-p 0 -n 32 -t 16,8 --device gpu --vram-budget 8GiB"
    [bench_hybrid_8g_serial]="-p 0 -n 32 -t 16,8 --device gpu --vram-budget 8GiB --no-overlap"
    [bench_hybrid_6g]="-p 0 -n 32 -t 16,8 --device gpu --vram-budget 6GiB"
    [bench_hybrid_6g_serial]="-p 0 -n 32 -t 16,8 --device gpu --vram-budget 6GiB --no-overlap"
    [bench_pp512_cpu_moe]="-p 512 -n 0 -r 1 -t 16 --device gpu --cpu-moe"
    [bench_all_gpu_kv_q8_0]="-p 0 -n 32 -t 16 -d 0,4096 --device gpu --n-gpu-experts 32 --kv-type q8_0"
  )
  for name in bench_all_gpu bench_all_gpu_kv_q8_0 bench_hybrid_8g bench_hybrid_8g_serial bench_hybrid_6g \
              bench_hybrid_6g_serial bench_pp512_cpu_moe; do
    time_left || { step "$name" skipped "time budget"; continue; }
    # shellcheck disable=SC2086
    if run "$name" 120 "${BENCH[@]}" ${RUNS[$name]}; then
      bench_json "$name" "$name" >>"$FIGURES"
      step "$name" ran "${RUNS[$name]}"
    else
      step "$name" failed "${RUNS[$name]}: see gpu_check.log"
    fi
  done
  # Roofline of the all-GPU decode, and the overlap's speed-up at each budget and thread count.
  python3 - "$FIGURES" "$gpu_bw" >>"$FIGURES.derived" <<'EOF'
import sys
fig = {}
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split("\t", 1)
    fig[k] = v
bw = float(sys.argv[2] or 0)
ts, bpt = fig.get("bench_all_gpu.t16.tg32.tok_s"), fig.get("bench_all_gpu.t16.tg32.bytes_per_token")
if ts and bpt and bw > 0:
    print(f"bench_all_gpu.roofline_fraction\t{float(ts) * float(bpt) / bw:.3f}")
for budget in ("8g", "6g"):
    for t in ("16", "8"):
        a = fig.get(f"bench_hybrid_{budget}.t{t}.tg32.tok_s")
        b = fig.get(f"bench_hybrid_{budget}_serial.t{t}.tg32.tok_s")
        if a and b and float(b) > 0:
            print(f"bench_hybrid_{budget}.t{t}.overlap_speedup\t{float(a) / float(b):.3f}")
EOF
  cat "$FIGURES.derived" >>"$FIGURES" 2>/dev/null
  rm -f "$FIGURES.derived"
  # A trace of the hybrid decode: overlap efficiency per layer.
  if time_left && run trace_hybrid 120 "${BENCH[@]}" -p 0 -n 16 -r 1 -t 16 --device gpu --vram-budget 8GiB \
      --trace "$WORK/hybrid_8g.trace.json" && run trace_summary 60 "$HETMOE" trace-summary "$WORK/hybrid_8g.trace.json"
  then
    cp "$WORK/trace_summary.out" "$OUT/trace_summary.txt"
    overlap=$(awk -F'|' '/^\| *[0-9]+ *\|/ { n++; s += $(NF-1) } END { if (n) printf "%.3f", s / n }' \
      "$WORK/trace_summary.out")
    figure trace_hybrid_8g.mean_overlap_efficiency "${overlap:-?}"
    grep -q "gpu compute" "$WORK/hybrid_8g.trace.json" && figure trace_hybrid_8g.gpu_tracks present ||
      figure trace_hybrid_8g.gpu_tracks missing
    step trace_hybrid ran "overlap efficiency per layer in trace_summary.txt (mean ${overlap:-?})"
  else
    step trace_hybrid failed "bench --trace or trace-summary failed: see gpu_check.log"
  fi
else
  for name in probe bench trace_hybrid; do step "$name" skipped "no synthetic model"; done
fi

finish

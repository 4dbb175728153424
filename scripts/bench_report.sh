#!/usr/bin/env bash
# Decode throughput report: runs `hetmoe bench -o json` sweeps and writes OUTDIR/report.md (tables: decode tok/s
# ± stddev, roofline fraction, read bandwidth, bytes per token) and PNG plots beside it.
#   - decode tok/s versus context depth (-d), at the largest thread count;
#   - decode tok/s versus thread count (-t), at depth 0;
#   - decode tok/s versus VRAM budget, only where `hetmoe info` lists a GPU and `hetmoe bench` has --vram-budget.
# Plots need python3-matplotlib; where it is missing the script installs it with apt-get (as root, or with sudo),
# and writes the tables without plots if that fails.
#
# Usage: scripts/bench_report.sh MODEL OUTDIR [options]
#   -d, --depths LIST        context depths (default 0,512,2048)
#   -t, --threads LIST       thread counts (default 1..nproc)
#   -r, --reps N             repetitions per point, after one warm-up (default 3)
#   -n, --n-gen N            tokens decoded per repetition (default 32)
#   --kv-type T              KV cache type, f16 or f32 (default f16)
#   --vram-budgets LIST      budgets for the VRAM sweep, e.g. 2GiB,4GiB,8GiB (default: a quarter, a half and
#                            90 % of the first GPU's free memory)
#   --hetmoe PATH            the hetmoe binary (default build/bin/hetmoe)
set -euo pipefail

usage() { sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "bench_report: $*" >&2; exit 1; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
hetmoe="$repo/build/bin/hetmoe"
depths="0,512,2048"
threads=""
reps=3
n_gen=32
kv_type=f16
vram_budgets=""
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -d|--depths) depths="${2:?}"; shift 2 ;;
    -t|--threads) threads="${2:?}"; shift 2 ;;
    -r|--reps) reps="${2:?}"; shift 2 ;;
    -n|--n-gen) n_gen="${2:?}"; shift 2 ;;
    --kv-type) kv_type="${2:?}"; shift 2 ;;
    --vram-budgets) vram_budgets="${2:?}"; shift 2 ;;
    --hetmoe) hetmoe="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -eq 2 ]] || { usage >&2; die "expected MODEL and OUTDIR, got ${#positional[@]} arguments"; }
model="${positional[0]}"
outdir="${positional[1]}"
[[ -r "$model" ]] || die "model '$model' is not a readable file"
[[ -x "$hetmoe" ]] || die "'$hetmoe' is not an executable (build it: cmake --build build --target hetmoe)"
[[ "$depths" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--depths '$depths': expected comma-separated integers, e.g. 0,512"
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps '$reps': expected a positive integer"
[[ "$n_gen" =~ ^[1-9][0-9]*$ ]] || die "--n-gen '$n_gen': expected a positive integer"
if [[ -z "$threads" ]]; then
  threads="$(seq -s, 1 "$(nproc)")"
fi
[[ "$threads" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads '$threads': expected comma-separated positive integers"
max_threads="$(tr , '\n' <<<"$threads" | sort -n | tail -1)"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

run_bench() {  # OUTFILE ARGS...: one `hetmoe bench` run, JSON to OUTFILE, its stderr to OUTFILE.log
  local out="$1"; shift
  local cmd=("$hetmoe" bench -m "$model" -p 0 -n "$n_gen" -r "$reps" --kv-type "$kv_type" -o json "$@")
  echo "bench_report: ${cmd[*]}" >&2
  echo "${cmd[*]}" >>"$outdir/commands.txt"
  "${cmd[@]}" >"$out" 2>"$out.log" || { cat "$out.log" >&2; die "hetmoe bench failed (log: $out.log)"; }
}

: >"$outdir/commands.txt"
run_bench "$outdir/depth.json" -d "$depths" -t "$max_threads"
run_bench "$outdir/threads.json" -d 0 -t "$threads"

# VRAM sweep: a GPU is "found" when `hetmoe info` lists one ("GPU <idx>: <name> ..."); the sweep also needs the
# --vram-budget flag of `hetmoe bench`.
vram_note=""
info="$("$hetmoe" info -m "$model" --no-tensors 2>&1 || true)"
gpu_line="$(grep -E '^GPU [0-9]+:' <<<"$info" | head -1 || true)"
if [[ -z "$gpu_line" ]]; then
  vram_note="skipped: no GPU found (hetmoe info: $(grep -E '^GPU' <<<"$info" | head -1 || echo 'no GPU line'))"
elif ! "$hetmoe" bench --help 2>&1 | grep -q -- '--vram-budget'; then
  vram_note="skipped: $gpu_line, but this hetmoe bench has no --vram-budget option yet"
else
  if [[ -z "$vram_budgets" ]]; then
    free_gb="$(sed -nE 's/.* ([0-9.]+) GB free.*/\1/p' <<<"$gpu_line" | head -1)"
    if [[ -n "$free_gb" ]]; then  # a quarter, half and 90 % of the free memory, in MiB
      vram_budgets="$(awk -v v="$free_gb" 'BEGIN { m = v * 1e9 / 1048576; printf "%dMiB,%dMiB,%dMiB", m / 4, m / 2, m * 0.9 }')"
    else
      vram_budgets="1GiB,2GiB,4GiB"
    fi
  fi
  : >"$outdir/vram.json.list"
  i=0
  for budget in ${vram_budgets//,/ }; do
    run_bench "$outdir/vram_$i.json" -d 0 -t "$max_threads" --vram-budget "$budget"
    echo "$budget $outdir/vram_$i.json" >>"$outdir/vram.json.list"
    i=$((i + 1))
  done
fi

# Plotting: python3-matplotlib from Debian (installed here when missing; CI does not need it). The Debian package
# serves the system interpreter, /usr/bin/python3, which may not be the python3 first on PATH.
plots=1
py=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import matplotlib' 2>/dev/null; then
    py="$candidate"
    break
  fi
done
if [[ -z "$py" ]]; then
  echo "bench_report: python3-matplotlib is missing; installing it with apt-get" >&2
  sudo_cmd=()
  [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
  if { "${sudo_cmd[@]}" apt-get update -qq && \
       DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-matplotlib; } >&2 &&
     /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    py=/usr/bin/python3
  else
    echo "bench_report: could not install python3-matplotlib: writing the tables without plots" >&2
    plots=0
  fi
fi
[[ -n "$py" ]] || py="$(command -v python3 || echo /usr/bin/python3)"

machine="$(lscpu 2>/dev/null | sed -nE 's/^Model name: +//p' | head -1), $(nproc) CPUs, \
$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"

OUTDIR="$outdir" MODEL="$model" PLOTS="$plots" VRAM_NOTE="$vram_note" MACHINE="$machine" COMMIT="$commit" \
"$py" - <<'PY'
import json, os, datetime

outdir = os.environ["OUTDIR"]
plots = os.environ["PLOTS"] == "1"

def load(path):
    with open(path) as f:
        return [r for r in json.load(f) if r["n_gen"] > 0]

depth = sorted(load(os.path.join(outdir, "depth.json")), key=lambda r: r["n_depth"])
threads = sorted(load(os.path.join(outdir, "threads.json")), key=lambda r: r["n_threads"])
vram = []
vram_list = os.path.join(outdir, "vram.json.list")
if os.path.exists(vram_list):
    for line in open(vram_list):
        budget, path = line.split()
        for r in load(path):
            r["vram_budget"] = budget
            vram.append(r)

def table(title, rows, extra=None):
    """Markdown table: an optional first column (name, row -> value), threads, depth and the figures."""
    head = ([extra[0]] if extra else []) + ["threads", "depth", "decode tok/s (mean ± sd)", "roofline", "read GB/s",
                                            "GB/token"]
    out = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for r in rows:
        gb = r["bytes_per_token"] / 1e9 if r.get("bytes_per_token") else float("nan")
        cells = ([str(extra[1](r))] if extra else []) + [
            str(r["n_threads"]), str(r["n_depth"]), f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}",
            f"{100 * r['roofline_fraction']:.0f} %", f"{r['mem_read_bw_gbs']:.1f}", f"{gb:.4f}"]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]

def plot(name, rows, xkey, xlabel, title, categorical=False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r[xkey] for r in rows]
    pos = list(range(len(xs))) if categorical else xs
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.errorbar(pos, [r["avg_ts"] for r in rows], yerr=[r["stddev_ts"] for r in rows], marker="o", capsize=4)
    ax.set_ylabel("decode tok/s (mean ± sd)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{title}\n{rows[0]['model_type']}, {rows[0]['backend']}, KV {rows[0]['type_k']}", fontsize=10)
    ax.grid(True, alpha=0.3)
    roofline = [100 * r["roofline_fraction"] for r in rows]
    ax2.plot(pos, roofline, marker="s", color="tab:red")
    ax2.set_ylabel("roofline (%)")
    ax2.set_ylim(0, max(110, 1.1 * max(roofline)))
    ax2.axhline(100, color="gray", linestyle="--", linewidth=0.8)
    ax2.grid(True, alpha=0.3)
    ax2.set_xlabel(xlabel)
    ax2.set_xticks(pos)
    ax2.set_xticklabels([str(x) for x in xs])
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, name), dpi=110)
    plt.close(fig)

r0 = (depth or threads)[0]
lines = ["# hetmoe decode benchmark", "",
         f"- model: `{os.environ['MODEL']}` ({r0['model_type']}, {r0['model_size'] / 1e9:.3f} GB, "
         f"{r0['model_n_params'] / 1e9:.3f} B params)",
         f"- backend: {r0['backend']}; KV cache {r0['type_k']}; weights {r0['weights_load']}",
         f"- machine: {os.environ['MACHINE']}",
         f"- hetmoe commit {os.environ['COMMIT']}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
         f"- each point: {len(r0['samples_ts'])} repetitions of {r0['n_gen']} decoded tokens after one warm-up; "
         "the roofline is tok/s ÷ (read bandwidth ÷ bytes read per token), bandwidth measured in the same run; "
         "above 100 % the weights sat in the CPU caches (a model smaller than the last-level cache)",
         "- raw data: `depth.json`, `threads.json` (and `vram_*.json`); commands: `commands.txt`", ""]
lines += table("Decode tok/s versus context depth", depth)
if plots:
    plot("decode_vs_depth.png", depth, "n_depth", "context depth (tokens in the KV cache)",
         f"decode tok/s vs context depth ({depth[0]['n_threads']} threads)", categorical=True)
    lines += ["![decode tok/s versus context depth](decode_vs_depth.png)", ""]
lines += table("Decode tok/s versus thread count", threads)
if plots:
    plot("decode_vs_threads.png", threads, "n_threads", "threads", "decode tok/s vs threads (depth 0)")
    lines += ["![decode tok/s versus thread count](decode_vs_threads.png)", ""]
lines += ["### Decode tok/s versus VRAM budget", ""]
if vram:
    lines += table("", vram, ("VRAM budget", lambda r: r["vram_budget"]))[2:]
    if plots:
        plot("decode_vs_vram.png", vram, "vram_budget", "VRAM budget", "decode tok/s vs VRAM budget",
             categorical=True)
        lines += ["![decode tok/s versus VRAM budget](decode_vs_vram.png)", ""]
else:
    lines += [os.environ["VRAM_NOTE"] or "skipped", ""]
if not plots:
    lines += ["(No plots: python3-matplotlib could not be installed.)", ""]
with open(os.path.join(outdir, "report.md"), "w") as f:
    f.write("\n".join(lines))
PY
[[ -z "$vram_note" ]] || echo "bench_report: VRAM sweep $vram_note" >&2
echo "bench_report: wrote $outdir/report.md$([[ $plots -eq 1 ]] && echo ' and PNG plots')" >&2

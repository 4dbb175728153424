#!/usr/bin/env python3
"""The include graph of hetmoe's folders, and the check that every folder includes only folders below it.

Usage: scripts/include_graph.py [--check] [--mermaid]
  (no option)  one line per folder edge: "FROM -> TO (N includes)"
  --mermaid    the graph as a Mermaid flowchart (docs/architecture.md embeds it)
  --check      exit 1 and list every #include that points up or sideways in the flow (ctest runs this)

The layers, lowest first, are LAYERS below; tests/ and bench/ may include anything.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Lowest first. A folder may include only folders that come before it (and itself).
LAYERS = [
    "runtime/base",     # Status/Expected, byte sizes, tensor types
    "profiler",         # traces, memory and bandwidth probes
    "cpu_kernels",      # scalar reference and SIMD kernels
    "runtime/model",    # GGUF, Model, KV types, synth
    "runtime/text",     # tokenizer, harmony
    "placement",        # statistics, cost model, optimizer -> Plan
    "runtime/backend",  # ForwardPass, GpuStepDevice, GPU backend entry, device memory plan
    "gpu_kernels",      # CUDA kernels and the CUDA backend
    "runtime/exec",     # forward passes, KV cache, worker pools, hybrid step
    "runtime/app",      # generation, sampler, config file
    "runtime/cli",      # the hetmoe program
]
SOURCE_SUFFIXES = {".h", ".cpp", ".cu", ".cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of(path: str):
    """The layer a repository-relative path belongs to, or None (tests/, bench/, scripts/)."""
    best = None
    for layer in LAYERS:
        if path == layer or path.startswith(layer + "/"):
            if best is None or len(layer) > len(best):
                best = layer
    return best


def edges():
    """{(from_layer, to_layer): [(file, include), ...]} over every source file of every layer."""
    out = {}
    for layer in LAYERS:
        for f in sorted((ROOT / layer).rglob("*")):
            if f.suffix not in SOURCE_SUFFIXES or not f.is_file():
                continue
            rel = f.relative_to(ROOT).as_posix()
            if folder_of(rel) != layer:  # a subfolder that is a layer of its own (runtime/cli under runtime)
                continue
            for inc in INCLUDE.findall(f.read_text(encoding="utf-8", errors="replace")):
                target = folder_of(inc)
                if target is None:
                    continue
                out.setdefault((layer, target), []).append((rel, inc))
    return out


def main(argv):
    graph = edges()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    if "--check" in argv:
        bad = [(f, inc, a, b) for (a, b), incs in graph.items() if rank[b] > rank[a] for f, inc in incs]
        for f, inc, a, b in sorted(bad):
            print(f"{f}: includes {inc}: {a} may include only folders below it, and {b} is not")
        print(f"include layering: {len(LAYERS)} folders, {sum(len(v) for v in graph.values())} includes, "
              f"{len(bad)} pointing up")
        return 1 if bad else 0
    if "--mermaid" in argv:
        ids = {layer: layer.replace("/", "_") for layer in LAYERS}
        print("flowchart BT")
        for layer in LAYERS:
            print(f'  {ids[layer]}["{layer}/"]')
        for (a, b), incs in sorted(graph.items(), key=lambda kv: (rank[kv[0][0]], rank[kv[0][1]])):
            if a != b:
                print(f"  {ids[a]} --> {ids[b]}")
        return 0
    for (a, b), incs in sorted(graph.items(), key=lambda kv: (rank[kv[0][0]], rank[kv[0][1]])):
        if a != b:
            print(f"{a} -> {b} ({len(incs)} includes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Benchmark of `hetmoe serve` (stdlib only): aggregate decode tok/s with 1, 2, 4 and 8 concurrent streams, time to
first token (TTFT) p50/p99, and the second turn of a ~2,000-token conversation with and without the prompt cache.

usage: bench/serve_bench.py --binary build/bin/hetmoe --model MODEL.gguf [--threads 2] [--tokens 32]
       [--streams 1,2,4,8] [--parallel N] [--url http://HOST:PORT]  (--url: an already running server, e.g. llama-server -np 4;
       the cache comparison then needs --url-no-cache too, or is skipped)

Each level sends N streamed chat requests at once (temperature 0, max_tokens = --tokens, distinct prompts) to a
server with --parallel slots (default: the largest level; streams beyond the slots wait in its queue).
Aggregate decode tok/s = tokens after each stream's first / (last token time - first token time over all streams).
Prints a Markdown table; run it on a quiet machine (nothing else building).
"""
import argparse
import json
import re
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request


def start_server(binary, model, threads, parallel, ctx, extra):
    cmd = [binary, "serve", "-m", model, "--port", "0", "-t", str(threads), "--parallel", str(parallel),
           "-c", str(ctx)] + extra
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    port = None
    while port is None:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("hetmoe serve exited before listening")
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if urllib.request.urlopen(url + "/health").status == 200:
                return proc, url
        except Exception:
            time.sleep(0.2)


def stream_chat(url, messages, max_tokens, out, raw_prompt=None):
    """One streamed request; appends (t_start, t_first, t_last, num_tokens, usage) to out. With raw_prompt, a
    /v1/completions request instead: its chunks carry every token's text, where a chat's text may only appear once
    the harmony parser has decided a channel (random-weight models), which would hide when tokens arrive."""
    fields = {"prompt": raw_prompt} if raw_prompt is not None else {"messages": messages}
    body = json.dumps({**fields, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    path = "/v1/completions" if raw_prompt is not None else "/v1/chat/completions"
    req = urllib.request.Request(url + path, body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    usage = None
    try:
        r = urllib.request.urlopen(req)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read().decode()}") from None
    with r:
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            # A token's chunk carries text, reasoning or a tool call; the opening chunk ({"role", "content": ""})
            # comes before the prefill and must not count as the first token.
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            delta = choice.get("delta", {})
            if choice.get("text") or any(delta.get(k) for k in ("content", "reasoning", "reasoning_content", "tool_calls")):
                now = time.perf_counter()
                first = first or now
                last = now
    out.append((t0, first, last, usage["completion_tokens"] if usage else 0, usage))


def level(url, n, max_tokens, salt):
    out, threads = [], []
    for i in range(n):
        prompt = f"Request {salt}-{i}: write about the number {i * 7 + salt}."
        threads.append(threading.Thread(target=stream_chat, args=(url, None, max_tokens, out, prompt)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [o[1] for o in out if o[1]]
    lasts = [o[2] for o in out if o[2]]
    decoded = sum(max(0, o[3] - 1) for o in out)
    span = max(lasts) - min(firsts) if firsts and lasts else 0
    ttfts = [o[1] - o[0] for o in out if o[1]]
    return decoded / span if span > 0 else 0.0, ttfts


def second_turn_ttft(url, tokens):
    long_text = "hello " * 1900  # about 2,000 tokens in o200k with the harmony header (about 5,800 in the tiny test vocabulary)
    first = [{"role": "user", "content": long_text}]
    out = []
    stream_chat(url, first, tokens, out)
    msgs = first + [{"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Summarize."}]
    out2 = []
    stream_chat(url, msgs, 4, out2)
    t0, t_first, _, _, usage = out2[0]
    return t_first - t0, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/bin/hetmoe")
    ap.add_argument("--model", required=False)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--parallel", type=int, help="the server's slots (default: the largest --streams level)")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--url")
    ap.add_argument("--url-no-cache")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    procs = []
    url = a.url
    if not url:
        proc, url = start_server(a.binary, a.model, a.threads, a.parallel or max(levels), a.ctx, [])
        procs.append(proc)
    try:
        print("| streams | aggregate decode tok/s | TTFT p50 s | TTFT p99 s |\n|---|---|---|---|")
        all_ttft = []
        for i, n in enumerate(levels):
            rate, ttfts = level(url, n, a.tokens, i)
            all_ttft += ttfts
            print(f"| {n} | {rate:.2f} | {statistics.median(ttfts):.3f} | {pct(ttfts, 99):.3f} |")
        print(f"\nTTFT over all levels: p50 {statistics.median(all_ttft):.3f} s, p99 {pct(all_ttft, 99):.3f} s")
        cached = second_turn_ttft(url, 8)
        url_nc = a.url_no_cache
        if not url_nc and not a.url:
            # One model in memory at a time (the 20b's 12 GB fit in a 24 GB machine's RAM once): stop the first server.
            for p in procs:
                p.terminate()
                p.wait()
            procs.clear()
            proc, url_nc = start_server(a.binary, a.model, a.threads, 1, a.ctx, ["--no-cache-prompt"])
            procs.append(proc)
        print("\n| second turn of a ~2,000-token chat | TTFT s | prompt tokens | cached tokens |\n|---|---|---|---|")
        print(f"| prompt cache | {cached[0]:.3f} | {cached[1]} | {cached[2]} |")
        if url_nc:
            cold = second_turn_ttft(url_nc, 8)
            print(f"| no prompt cache | {cold[0]:.3f} | {cold[1]} | {cold[2]} |")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()

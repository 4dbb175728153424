#!/usr/bin/env python3
"""Benchmark of `hetmoe serve` (stdlib only): aggregate decode tok/s with 1, 2, 4 and 8 concurrent streams, time to
first token (TTFT) p50/p99, and the second turn of a ~2,000-token conversation with and without the prompt cache.

usage: bench/serve_bench.py --binary build/bin/hetmoe --model MODEL.gguf [--threads 2] [--tokens 32]
       [--streams 1,2,4,8] [--rounds 2] [--parallel N] [--turn-tokens 2000] [--conversation chat|completions]
       [--url http://HOST:PORT]  (--url: an already running server, e.g. llama-server -np 4)

Each level sends N streamed /v1/completions requests at once (temperature 0, max_tokens = --tokens, distinct prompts)
to a server with --parallel slots (default: the largest level; streams beyond the slots wait in its queue); the levels
repeat --rounds times, interleaved. Aggregate decode tok/s = tokens after each stream's first / (last token time -
first token time over all streams). The conversation's turns use "cache_prompt" (hetmoe and llama-server) to compare
the second turn with and without the prompt cache on the same server.
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


def post(url, path, body):
    """A non-streamed request; returns (seconds, parsed response)."""
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path}: HTTP {e.code}: {e.read().decode()}") from None
    return time.perf_counter() - t0, data


def conversation_text(url, target_tokens, salt):
    """Words that make about target_tokens prompt tokens in this server's vocabulary (measured with a 200-word probe:
    the synthetic models' placeholder vocabulary splits words into more tokens than o200k does)."""
    words = ["apple", "river", "stone", "cloud", "green", "music", "table", "light", "paper", "north"]
    probe = " ".join(words[(i * 7 + salt) % len(words)] for i in range(200))
    _, data = post(url, "/v1/completions", {"prompt": probe, "max_tokens": 1, "temperature": 0, "cache_prompt": False})
    per_word = data["usage"]["prompt_tokens"] / 200
    n = max(1, int(target_tokens / per_word))
    return f"Conversation {salt}: " + " ".join(words[(i * 3 + i // 10 + salt) % len(words)] for i in range(n))


def second_turn(url, mode, target_tokens, salt):
    """A ~target_tokens first turn, then the second turn with the prompt cache and again with "cache_prompt": false
    (llama-server's per-request switch; hetmoe takes it too), non-streamed, 1 answer token each: the request time is
    the time to first token. mode "chat" sends messages, "completions" the same text as a raw prompt (for servers whose
    chat endpoint fails on random-weight output). Returns [(label, seconds, prompt tokens, cached tokens)]."""
    text = conversation_text(url, target_tokens, salt)
    if mode == "chat":
        first = {"messages": [{"role": "user", "content": text}]}
        second = {"messages": first["messages"] + [{"role": "assistant", "content": "Noted."},
                                                   {"role": "user", "content": "Summarize."}]}
        path = "/v1/chat/completions"
    else:
        first = {"prompt": text}
        second = {"prompt": text + " Noted. Summarize."}
        path = "/v1/completions"
    rows = []
    for label, body, cache in (("first turn", first, True), ("second turn, prompt cache", second, True),
                               ("second turn, no prompt cache", second, False)):
        seconds, data = post(url, path, {**body, "max_tokens": 1, "temperature": 0, "cache_prompt": cache})
        usage = data["usage"]
        rows.append((label, seconds, usage["prompt_tokens"],
                     (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)))
    return rows


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
    ap.add_argument("--rounds", type=int, default=2, help="repetitions of all levels, interleaved (1 2 4 8 1 2 4 8)")
    ap.add_argument("--turn-tokens", type=int, default=2000, help="prompt tokens of the conversation's first turn")
    ap.add_argument("--conversation", choices=["chat", "completions"], default="chat")
    ap.add_argument("--conversation-rounds", type=int, help="rounds of the conversation test (default: --rounds)")
    ap.add_argument("--url", help="an already running server (e.g. llama-server -np 4) instead of starting hetmoe")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    procs = []
    url = a.url
    if not url:
        proc, url = start_server(a.binary, a.model, a.threads, a.parallel or max(levels), a.ctx, [])
        procs.append(proc)
    try:
        rates = {n: [] for n in levels}
        ttfts = {n: [] for n in levels}
        for r in range(a.rounds):
            for i, n in enumerate(levels):
                rate, t = level(url, n, a.tokens, r * len(levels) + i)
                rates[n].append(rate)
                ttfts[n] += t
        print(f"| streams | aggregate decode tok/s, best (all {a.rounds} rounds) | TTFT p50 s | TTFT p99 s |")
        print("|---|---|---|---|")
        for n in levels:
            all_rates = " ".join(f"{x:.2f}" for x in rates[n])
            print(f"| {n} | {max(rates[n]):.2f} ({all_rates}) | {statistics.median(ttfts[n]):.3f} | "
                  f"{pct(ttfts[n], 99):.3f} |")
        print(f"\n| ~{a.turn_tokens}-token conversation ({a.conversation}) | round | time to first token s | "
              "prompt tokens | cached tokens |\n|---|---|---|---|---|")
        for r in range(a.conversation_rounds if a.conversation_rounds is not None else a.rounds):
            for label, seconds, prompt_tokens, cached in second_turn(url, a.conversation, a.turn_tokens, r):
                print(f"| {label} | {r + 1} | {seconds:.3f} | {prompt_tokens} | {cached} |")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()

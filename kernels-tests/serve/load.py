#!/usr/bin/env python3
"""Load test of `wgmoe serve`: many concurrent streams, the 429 of a full queue, and no leaks.

usage: load.py BASE_URL CLIENTS
  BASE_URL  a server of the tiny model (tiny_model.py), e.g. http://127.0.0.1:8080, started with
            --parallel 4 --queue 32 --context 256 (no --api-key)
  CLIENTS   concurrent clients, e.g. 32 (at most 36: one distinct prompt each)
env: WGMOE_LOAD_TIMEOUT  seconds a concurrent pass may take in all (default 300)
     WGMOE_PARALLEL, WGMOE_QUEUE  the server's --parallel and --queue (default 4 and 32)

1. Sequential: each prompt alone (streamed, greedy, 16 tokens) gives its reference text.
2. Warm: all CLIENTS at once; then, idle, wgmoe_gpu_memory_bytes is the idle figure.
3. Load: all CLIENTS at once again, each on its own thread and openai client: every one
   finishes within the bound with its own reference text (none lost, none swapped), every
   reply id is unique, every stream has exactly one finish chunk; prints TTFT and tokens/s.
4. Overflow: PARALLEL + QUEUE + 12 non-streamed requests at once (raw HTTP): some are 429
   with code queue_full, at most 12, the rest 200, nothing else.
5. After: /health is ok, nothing runs or waits, and the GPU memory is back to the idle figure.
Exits 0 when all pass, 1 otherwise.
"""
import http.client
import json
import os
import re
import string
import sys
import threading
import time
import urllib.parse
import urllib.request

from openai import OpenAI

TIMEOUT = float(os.environ.get("WGMOE_LOAD_TIMEOUT", "300"))
PARALLEL = int(os.environ.get("WGMOE_PARALLEL", "4"))
QUEUE = int(os.environ.get("WGMOE_QUEUE", "32"))
OVERFLOW_EXTRA = 12
MAX_TOKENS = 16

# Each prompt starts with its own character right after the chat template's head, so no two
# share more than the head. Capitals and digits are single tokens that merge with nothing in
# the tiny vocabulary, so every prompt is the same number of tokens.
FIRST = string.ascii_uppercase + string.digits
FILLER = ": once upon a time a tiny model told a story about the sea."


def prompts(n):
    assert n <= len(FIRST), f"at most {len(FIRST)} clients (one distinct first character each), not {n}"
    out = [c + FILLER for c in FIRST[:n]]
    assert len({len(p) for p in out}) == 1
    return out


# ---------------------------------------------------------------------------------------------
# Server state


def get(base, path, timeout=30):
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return r.status, r.read().decode()


def metrics(base):
    """/metrics as {name: value}, labelled samples summed."""
    status, text = get(base, "/metrics")
    assert status == 200, f"/metrics status {status}"
    values = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? (\S+)$", line)
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(2))
    return values


def wait_idle(base, seconds=30):
    """Metrics once nothing runs or waits (fails after `seconds`)."""
    end = time.time() + seconds
    while True:
        m = metrics(base)
        if m.get("wgmoe_running") == 0 and m.get("wgmoe_queue_depth") == 0:
            return m
        assert time.time() < end, (
            f"not idle {seconds} s later: running {m.get('wgmoe_running')}, queue {m.get('wgmoe_queue_depth')}"
        )
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Streams


def stream_one(base, model, prompt):
    """One streamed greedy chat with its own client: a dict of what came back and when."""
    client = OpenAI(base_url=base + "/v1", api_key="none", timeout=TIMEOUT, max_retries=0)
    start = time.time()
    first = None
    text, ids, finishes, usage = [], set(), [], None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.time()
                text.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    end = time.time()
    tokens = usage.completion_tokens if usage else 0
    return {
        "text": "".join(text),
        "ids": ids,
        "finishes": finishes,
        "tokens": tokens,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "ttft": (first or end) - start,
        "tok_s": tokens / (end - start) if end > start else 0.0,
        "start": start,
        "end": end,
    }


def concurrent(fn, args_list, bound):
    """Run fn(*args) for each args on its own thread, all released at once; wait at most
    `bound` seconds in all. Returns (results, errors) by index; a thread still running at the
    end is an error ("lost")."""
    results, errors = [None] * len(args_list), [None] * len(args_list)
    gate = threading.Barrier(len(args_list))

    def work(i, args):
        try:
            gate.wait(timeout=60)
            results[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 -- reported per client
            errors[i] = repr(e)

    threads = [threading.Thread(target=work, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    deadline = time.time() + bound
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    for i, t in enumerate(threads):
        if t.is_alive():
            errors[i] = f"still running after {bound:.0f} s (lost)"
    return results, errors


# ---------------------------------------------------------------------------------------------
# Passes


def sequential(base, model, texts):
    refs = []
    for p in texts:
        r = stream_one(base, model, p)
        assert r["finishes"] and r["text"], f"sequential {p[:1]!r}: {r}"
        refs.append(r)
    counts = {r["prompt_tokens"] for r in refs}
    assert len(counts) == 1, f"the prompts are not all the same length in tokens: {sorted(counts)}"
    return [r["text"] for r in refs], counts.pop()


def load_pass(base, model, texts, refs, label):
    t0 = time.time()
    results, errors = concurrent(lambda p: stream_one(base, model, p), [(p,) for p in texts], TIMEOUT)
    wall = time.time() - t0
    failed = [f"client {i} ({texts[i][:1]}): {e}" for i, e in enumerate(errors) if e]
    assert not failed, f"{label}: {len(failed)} of {len(texts)} clients failed:\n  " + "\n  ".join(failed)
    wrong = [
        f"client {i} ({texts[i][:1]}): {r['text']!r}, alone {refs[i]!r}"
        for i, r in enumerate(results)
        if r["text"] != refs[i]
    ]
    assert not wrong, f"{label}: {len(wrong)} replies differ from the same prompt alone:\n  " + "\n  ".join(wrong)
    for i, r in enumerate(results):
        assert len(r["ids"]) == 1, f"{label}: client {i} saw ids {r['ids']} in one stream"
        assert len(r["finishes"]) == 1, f"{label}: client {i} got finish chunks {r['finishes']}"
    all_ids = [next(iter(r["ids"])) for r in results]
    assert len(set(all_ids)) == len(all_ids), f"{label}: reply ids repeat: {sorted(all_ids)}"
    return results, wall


def overflow(base, model, text):
    """PARALLEL + QUEUE + OVERFLOW_EXTRA requests at once: {status: count} and the 429 codes."""
    n = PARALLEL + QUEUE + OVERFLOW_EXTRA
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 32, "temperature": 0}
    )
    u = urllib.parse.urlsplit(base)

    def post(conn):
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    # Connect first, so that the requests themselves leave together when the gate opens.
    conns = [http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT) for _ in range(n)]
    for c in conns:
        c.connect()
    results, errors = concurrent(post, [(c,) for c in conns], TIMEOUT)
    failed = [f"request {i}: {e}" for i, e in enumerate(errors) if e]
    assert not failed, f"overflow: {len(failed)} requests failed:\n  " + "\n  ".join(failed)
    statuses, codes = {}, set()
    for status, data in results:
        statuses[status] = statuses.get(status, 0) + 1
        if status == 429:
            err = json.loads(data).get("error", {})
            codes.add(err.get("code"))
            assert err.get("message") and err.get("type"), f"429 body {data!r}"
        elif status == 200:
            reply = json.loads(data)
            assert reply["choices"][0]["message"]["content"] is not None, f"200 body {data[:200]!r}"
    return n, statuses, codes


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, clients = sys.argv[1].rstrip("/"), int(sys.argv[2])
    start = time.time()
    try:
        texts = prompts(clients)
        model = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0).models.list().data[0].id
        wait_idle(base)

        t = time.time()
        refs, prompt_tokens = sequential(base, model, texts)
        print(f"sequential: {clients} prompts of {prompt_tokens} tokens alone in {time.time() - t:.1f} s", flush=True)

        _, wall = load_pass(base, model, texts, refs, "warm pass")
        idle_mem = wait_idle(base)["wgmoe_gpu_memory_bytes"]
        print(f"warm pass: {clients} concurrent streams in {wall:.1f} s; idle GPU memory {idle_mem:.0f} bytes", flush=True)

        results, wall = load_pass(base, model, texts, refs, "load pass")
        tokens = sum(r["tokens"] for r in results)
        ttfts = sorted(r["ttft"] for r in results)
        print(
            f"load pass: {clients} concurrent streams in {wall:.1f} s, all equal to their sequential text; "
            f"{tokens} tokens, {tokens / wall:.1f} tokens/s in all; TTFT mean {sum(ttfts) / len(ttfts):.2f} s, "
            f"min {ttfts[0]:.2f} s, max {ttfts[-1]:.2f} s; per-client tokens/s mean "
            f"{sum(r['tok_s'] for r in results) / len(results):.1f}",
            flush=True,
        )

        n, statuses, codes = overflow(base, model, texts[0])
        print(f"overflow: {n} requests at once -> {dict(sorted(statuses.items()))}", flush=True)
        assert set(statuses) <= {200, 429}, f"overflow: statuses other than 200 and 429: {statuses}"
        n429 = statuses.get(429, 0)
        assert n429 >= 1, f"overflow: {n} requests against --parallel {PARALLEL} --queue {QUEUE}, no 429"
        assert n429 <= OVERFLOW_EXTRA, (
            f"overflow: {n429} requests refused, but only {OVERFLOW_EXTRA} of {n} exceed --parallel + --queue"
        )
        assert codes == {"queue_full"}, f"overflow: 429 codes {codes}, want queue_full"

        status, health = get(base, "/health")
        assert status == 200 and json.loads(health).get("status") == "ok", f"/health: {status} {health!r}"
        after_mem = wait_idle(base)["wgmoe_gpu_memory_bytes"]
        print(f"after: idle GPU memory {after_mem:.0f} bytes (idle figure {idle_mem:.0f}, "
              f"difference {after_mem - idle_mem:+.0f})", flush=True)
        assert after_mem == idle_mem, (
            f"GPU memory after the load is {after_mem:.0f} bytes, {after_mem - idle_mem:+.0f} from the idle "
            f"figure {idle_mem:.0f}"
        )
    except AssertionError as e:
        print(f"load.py: FAIL: {e}", flush=True)
        return 1
    print(
        f"load.py: ok: {clients} clients x2 matched their sequential replies, {n429} of {n} overflow "
        f"requests got 429 queue_full, back to idle with the same GPU memory, in {time.time() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

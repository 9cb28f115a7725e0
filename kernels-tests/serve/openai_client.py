#!/usr/bin/env python3
"""Check `wgmoe serve` with the real `openai` client and raw HTTP.

usage: openai_client.py BASE_URL API_KEY SMOL_BASE_URL
  BASE_URL       a server of the tiny model (tiny_model.py), e.g. http://127.0.0.1:8080, started
                 with --api-key API_KEY --parallel 2 --queue 8 --context 256 --max-body 65536
  API_KEY        its key
  SMOL_BASE_URL  a server of SmolLM2-135M-Instruct (no key, --context 1024)
env: WGMOE_CHECK_TIMEOUT  seconds one request may take (default 300)

Runs every check below (each a function; a failed one does not stop the others), prints one
line per check and a summary. The tiny model has random weights: its text is noise, so the
checks compare the server with itself (streamed == whole, same seed == same text, a stop
string cuts where the text had it, ...) and let constrained decoding make JSON valid; the
semantic checks run on SmolLM2. Exits 0 when all pass, 1 otherwise.
"""
import http.client
import json
import os
import re
import sys
import time
import traceback
import urllib.parse
import urllib.request

import jsonschema
import openai
from openai import OpenAI

TIMEOUT = float(os.environ.get("WGMOE_CHECK_TIMEOUT", "300"))
CONTEXT = 256  # the tiny server's --context
MAX_BODY = 65536  # the tiny server's --max-body

# A city, as the structured-output checks ask for it.
CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "country": {"type": "string", "enum": ["France", "Norway", "Japan", "Peru"]},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["name", "country", "population"],
    "additionalProperties": False,
}

# The tool of the forced call. The tiny model has random weights, 256 positions and a 128-id
# vocabulary, so its string is bounded (maxLength) and the object closed (additionalProperties
# false): without them a random model never closes the string or keeps inventing keys, and the
# call runs out of tokens. Its definition alone is about 160 of the 256 positions (so no
# description either).
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
# The second tool for tool_choice "required", which runs on SmolLM2: two definitions, the
# question and the call do not fit the tiny model's 256 positions.
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "maxLength": 32}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}


class Ctx:
    """What the checks share: the clients, the URLs and the served model's id."""

    def __init__(self, base, key, smol_base):
        self.base, self.key, self.smol_base = base, key, smol_base
        self.client = OpenAI(base_url=base + "/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
        self.smol = OpenAI(base_url=smol_base + "/v1", api_key="none", timeout=TIMEOUT, max_retries=0)
        self.model = None  # set by check_models
        self.smol_model = None

    def chat(self, **kw):
        kw.setdefault("model", self.model)
        return self.client.chat.completions.create(**kw)


# ---------------------------------------------------------------------------------------------
# Helpers


def user(text):
    return [{"role": "user", "content": text}]


def raw(base, method, path, body=None, headers=None, timeout=TIMEOUT):
    """One plain HTTP request: (status, headers, body bytes). `body` may be bytes or a dict."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def error_body(status, headers, data, want_status, what="the reply"):
    """The OpenAI error object of a raw reply (`raw`'s triple), after checking the status and
    the shape; `what` names the request in failures."""
    assert status == want_status, f"{what}: status {status}, want {want_status}: {data[:300]!r}"
    try:
        body = json.loads(data)
    except ValueError:
        raise AssertionError(f"{what}: the {status} body is not JSON: {data[:300]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{what}: no error object: {body}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"{what}: error.message: {err}"
    assert isinstance(err.get("type"), str) and err["type"], f"{what}: error.type: {err}"
    assert "code" in err and "param" in err, f"{what}: error lacks code/param: {err}"
    return err


def get_text(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$")


def metrics(base):
    """/metrics as {name: value} (samples with labels summed) plus the raw text."""
    status, text = get_text(base + "/metrics")
    assert status == 200, f"/metrics status {status}"
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"/metrics line is not `name{{labels}} value`: {line!r}"
        values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(3))
    return values, text


def wait_idle(base, seconds=30):
    """Wait until nothing runs or waits; returns the metrics then."""
    end = time.time() + seconds
    while True:
        m, _ = metrics(base)
        if m.get("wgmoe_running") == 0 and m.get("wgmoe_queue_depth") == 0:
            return m
        assert time.time() < end, f"the server is not idle after {seconds} s: {m}"
        time.sleep(0.1)


def stream_chat(ctx, **kw):
    """A streamed chat: (text, chunks)."""
    chunks = list(ctx.chat(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# ---------------------------------------------------------------------------------------------
# Checks on the tiny model


def check_models(ctx):
    models = ctx.client.models.list().data
    assert len(models) == 1, f"{len(models)} models listed, want 1: {models}"
    ctx.model = models[0].id
    assert ctx.model and models[0].object == "model", f"bad model entry {models[0]}"
    r = ctx.chat(messages=user("hi"), max_tokens=2, temperature=0)
    assert r.model == ctx.model, f"reply names model {r.model!r}, /v1/models {ctx.model!r}"
    smol = ctx.smol.models.list().data
    assert len(smol) == 1, f"SmolLM2 server lists {len(smol)} models"
    ctx.smol_model = smol[0].id


CHAT_REQ = dict(messages=user("Tell me a short story about a cat."), max_tokens=12, temperature=0)


def check_chat(ctx):
    r = ctx.chat(**CHAT_REQ)
    assert r.object == "chat.completion" and r.id, f"object {r.object!r}, id {r.id!r}"
    assert len(r.choices) == 1, f"{len(r.choices)} choices"
    c = r.choices[0]
    assert c.message.role == "assistant", f"role {c.message.role!r}"
    assert isinstance(c.message.content, str), f"content {c.message.content!r}"
    u = r.usage
    assert u.prompt_tokens > 0, f"prompt_tokens {u.prompt_tokens}"
    assert 0 < u.completion_tokens <= 12, f"completion_tokens {u.completion_tokens} not in 1..12"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"total {u.total_tokens} != sum: {u}"
    assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
    if u.completion_tokens == 12:
        assert c.finish_reason == "length", f"12 of max_tokens 12 generated, finish_reason {c.finish_reason!r}"
    # The number of tokens: each generated token is one streamed content chunk here (every id
    # of this vocabulary but the two specials decodes to text).
    text, chunks = stream_chat(ctx, **CHAT_REQ)
    pieces = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) == u.completion_tokens, (
        f"usage.completion_tokens {u.completion_tokens}, but {len(pieces)} tokens were streamed: {text!r}"
    )


def check_chat_stream(ctx):
    whole = ctx.chat(**CHAT_REQ)
    text, chunks = stream_chat(ctx, stream_options={"include_usage": True}, **CHAT_REQ)
    want = whole.choices[0].message.content
    assert text == want, f"streamed {text!r} != non-streamed {want!r}"
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks), "a chunk is not chat.completion.chunk"
    assert len({c.id for c in chunks}) == 1, "chunks of one reply carry different ids"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, f"last chunk is not the usage chunk: {last}"
    assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"
    assert last.usage.completion_tokens == whole.usage.completion_tokens, (
        f"stream usage {last.usage} != non-stream usage {whole.usage}"
    )
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens, "prompt_tokens differ streamed vs not"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason], (
        f"finish reasons in the stream {finishes}, non-streamed {whole.choices[0].finish_reason!r}"
    )
    assert chunks[0].choices[0].delta.role == "assistant", f"first delta {chunks[0].choices[0].delta}"


def check_completions(ctx):
    req = dict(model=ctx.model, prompt="Once upon a time", max_tokens=10, temperature=0)
    whole = ctx.client.completions.create(**req)
    assert whole.object == "text_completion", f"object {whole.object!r}"
    want = whole.choices[0].text
    assert isinstance(want, str) and whole.usage.completion_tokens > 0, f"reply {whole}"
    chunks = list(ctx.client.completions.create(stream=True, stream_options={"include_usage": True}, **req))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == want, f"streamed {text!r} != non-streamed {want!r}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason], f"finish reasons {finishes} vs {whole.choices[0].finish_reason}"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens, (
        f"usage chunk {chunks[-1]}"
    )


def check_seed(ctx):
    req = dict(messages=user("Say something random."), max_tokens=16, temperature=1.0, top_p=1.0)
    a = ctx.chat(seed=1234, **req)
    b = ctx.chat(seed=1234, **req)
    ta, tb = a.choices[0].message.content, b.choices[0].message.content
    assert ta == tb, (
        f"seed 1234 gave {ta!r} (cached_tokens {cached_tokens(a.usage)}) then {tb!r} "
        f"(cached_tokens {cached_tokens(b.usage)})"
    )
    others = [ctx.chat(seed=s, **req).choices[0].message.content for s in (1235, 1236, 1237)]
    assert any(o != ta for o in others), f"seeds 1234..1237 all gave {ta!r}: sampling does not sample"
    greedy = ctx.chat(messages=req["messages"], max_tokens=16, temperature=0).choices[0].message.content
    assert any(t != greedy for t in [ta, *others]), f"temperature 1 always gives the greedy text {greedy!r}"


def check_stop(ctx):
    req = dict(messages=user("Count to twenty."), max_tokens=24, temperature=0)
    full = ctx.chat(**req).choices[0].message.content
    assert len(full) >= 8, f"the greedy reply is too short to cut: {full!r}"
    # Three characters from the middle whose first occurrence is at position 2 or later.
    starts = [i for i in range(len(full) // 2, len(full) - 2) if full.find(full[i : i + 3]) >= 2]
    assert starts, f"no stop string to pick from {full!r}"
    stop = full[starts[0] : starts[0] + 3]
    want = full[: full.find(stop)]
    r = ctx.chat(stop=[stop], **req)
    got = r.choices[0]
    assert got.message.content == want, f"stop={stop!r} on {full!r}: got {got.message.content!r}, want {want!r}"
    assert got.finish_reason == "stop", f"stop string hit, finish_reason {got.finish_reason!r}"
    # Streamed, the stop string must not leak either.
    text, chunks = stream_chat(ctx, stop=[stop], **req)
    assert text == want, f"streamed with stop={stop!r}: {text!r}, want {want!r}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], f"streamed with a stop string: finish reasons {finishes}"


def cached_tokens(usage):
    d = usage.prompt_tokens_details
    if d is not None:
        return d.cached_tokens
    return (usage.model_extra or {}).get("prompt_tokens_details", {}).get("cached_tokens")


def check_prompt_cache(ctx):
    long_text = (
        "You are a careful assistant. Here is some context about the weather in the north: "
        "it rains often, the winters are long and the summers short. Now answer briefly: "
        "what should I pack for a trip?"
    )
    req = dict(messages=[{"role": "system", "content": "Be brief."}, *user(long_text)], max_tokens=8, temperature=0)
    a = ctx.chat(**req)
    b = ctx.chat(**req)
    assert b.choices[0].message.content == a.choices[0].message.content, (
        f"same greedy request, different text: {a.choices[0].message.content!r} vs {b.choices[0].message.content!r}"
    )
    cached = cached_tokens(b.usage)
    assert cached is not None and cached > 0, f"second identical request: cached_tokens {cached}: {b.usage}"
    assert cached < b.usage.prompt_tokens, f"cached {cached} >= prompt {b.usage.prompt_tokens}"
    assert b.usage.prompt_tokens == a.usage.prompt_tokens, "prompt_tokens differ for the same request"


def check_json_schema(ctx):
    r = ctx.chat(
        messages=user("Give me a city as JSON."),
        max_tokens=120,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}},
    )
    text = r.choices[0].message.content
    try:
        obj = json.loads(text)
    except ValueError:
        raise AssertionError(f"json_schema reply is not JSON ({r.choices[0].finish_reason}): {text!r}") from None
    jsonschema.validate(obj, CITY_SCHEMA)
    r = ctx.chat(
        messages=user("Give me a JSON object."), max_tokens=120, temperature=0, response_format={"type": "json_object"}
    )
    text = r.choices[0].message.content
    try:
        obj = json.loads(text)
    except ValueError:
        raise AssertionError(f"json_object reply is not JSON ({r.choices[0].finish_reason}): {text!r}") from None
    assert isinstance(obj, dict), f"json_object gave a {type(obj).__name__}: {text!r}"


def validate_call(call, tools):
    """A tool call names one of `tools` and its arguments fit that tool's parameters."""
    assert call.type == "function" and call.id, f"call {call}"
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.function.name in by_name, f"called {call.function.name!r}, offered {list(by_name)}"
    try:
        args = json.loads(call.function.arguments)
    except ValueError:
        raise AssertionError(f"arguments are not JSON: {call.function.arguments!r}") from None
    jsonschema.validate(args, by_name[call.function.name])
    return args


def check_tool_call(ctx):
    q = user("Paris?")
    # The room the call has: what the prompt (tool list included) leaves of the context.
    probe = ctx.chat(messages=q, max_tokens=1, temperature=0, tools=[WEATHER])
    room = CONTEXT - probe.usage.prompt_tokens
    assert room >= 40, f"the tool prompt is {probe.usage.prompt_tokens} tokens: {room} left for the call"
    r = ctx.chat(
        messages=q,
        max_tokens=room,
        temperature=0,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}: {c.message}"
    calls = c.message.tool_calls or []
    assert len(calls) == 1, f"{len(calls)} tool calls: {c.message}"
    assert calls[0].function.name == "get_weather", f"called {calls[0].function.name!r}"
    validate_call(calls[0], [WEATHER])

    # The result goes back: the assistant's call, then the tool's answer (without the tool
    # list, which would not fit the tiny model's context again).
    follow = [
        *q,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": calls[0].id, "type": "function", "function": calls[0].function.model_dump()}],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 21, "unit": "celsius"}'},
    ]
    raw_reply = ctx.client.chat.completions.with_raw_response.create(
        model=ctx.model, messages=follow, max_tokens=8, temperature=0
    )
    assert raw_reply.status_code == 200, f"status {raw_reply.status_code}"
    m = raw_reply.parse().choices[0].message
    assert (m.content or "").strip() or m.tool_calls, f"no content and no call after the tool result: {m}"


def check_smol_tools_required(ctx):
    """tool_choice "required" with two tools, on SmolLM2: two definitions, the question and the
    call do not fit the tiny model's 256 positions."""
    q = user("What is the weather in Paris?")
    weather = {**WEATHER, "function": {**WEATHER["function"], "description": "Current weather in a city"}}
    tools = [weather, TIME]
    r = ctx.smol.chat.completions.create(
        model=ctx.smol_model, messages=q, max_tokens=60, temperature=0, tools=tools, tool_choice="required"
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", f"required: finish_reason {c.finish_reason!r}: {c.message}"
    assert c.message.tool_calls and len(c.message.tool_calls) == 1, f"required: tool_calls {c.message.tool_calls}"
    call = c.message.tool_calls[0]
    args = validate_call(call, tools)
    print(f"    SmolLM2 called {call.function.name}({json.dumps(args)})")


def check_auth(ctx):
    bad = OpenAI(base_url=ctx.base + "/v1", api_key=ctx.key + "-wrong", timeout=TIMEOUT, max_retries=0)
    try:
        bad.chat.completions.create(model=ctx.model, messages=user("hi"), max_tokens=2)
    except openai.AuthenticationError as e:
        assert e.status_code == 401, f"status {e.status_code}"
        assert e.code == "invalid_api_key", f"error.code {e.code!r}: {e.body}"
    else:
        raise AssertionError("a wrong key was accepted")
    # No key at all, raw.
    err = error_body(*raw(ctx.base, "GET", "/v1/models"), 401)
    assert err["code"] == "invalid_api_key", f"no key: {err}"
    # These stay open.
    status, text = get_text(ctx.base + "/health")
    assert status == 200 and json.loads(text).get("status") == "ok", f"/health {status} {text!r}"
    status, text = get_text(ctx.base + "/metrics")
    assert status == 200 and "wgmoe_requests_total" in text, f"/metrics {status}"


def check_errors(ctx):
    auth = {"Authorization": f"Bearer {ctx.key}"}
    msgs = user("hi")

    def post(body, path="/v1/chat/completions"):
        return raw(ctx.base, "POST", path, body=body, headers=auth)

    err = error_body(*post(b'{"model": "x", "messages": ['), 400, what="malformed JSON")
    assert err["type"] == "invalid_request_error", f"malformed JSON: type {err['type']!r}"

    err = error_body(*post({"model": ctx.model, "messages": msgs, "max_tokens": "ten"}), 400, what='max_tokens "ten"')
    assert "max_tokens" in err["message"], f"wrong type of max_tokens: message {err['message']!r}"
    assert err["type"] == "invalid_request_error", f"max_tokens \"ten\": type {err['type']!r}"

    err = error_body(*post({"model": ctx.model, "messages": msgs, "n": 2}), 400, what="n=2")
    assert err["type"] == "invalid_request_error", f"n=2: {err}"

    long_prompt = "one two three four five six seven eight nine ten " * 40  # > 256 tokens
    for path, body in (
        ("/v1/chat/completions", {"model": ctx.model, "messages": user(long_prompt), "max_tokens": 4}),
        ("/v1/completions", {"model": ctx.model, "prompt": long_prompt, "max_tokens": 4}),
    ):
        err = error_body(*post(body, path), 400, what=f"{path} with a prompt past the context")
        assert err["code"] == "context_length_exceeded", f"{path}, prompt past the context: {err}"

    # Errors only the engine can find (a schema that is not one, token ids past the vocabulary)
    # still get their status when the request streams: the answer starts after the engine took it.
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    for path, body in (
        ("/v1/chat/completions", {"model": ctx.model, "messages": msgs, "stream": True, "response_format": bad_schema}),
        ("/v1/completions", {"model": ctx.model, "prompt": [1, 999999], "stream": True, "max_tokens": 2}),
    ):
        err = error_body(*post(body, path), 400, what=f"streamed {path} with a bad schema or token id")
        assert err["type"] == "invalid_request_error", f"streamed {path}: {err}"

    huge = {"model": ctx.model, "messages": user("x" * (MAX_BODY + 1000)), "max_tokens": 1}
    err = error_body(*post(huge), 413, what=f"a body over {MAX_BODY} bytes")
    assert err["type"] == "invalid_request_error", f"413: {err}"

    error_body(*raw(ctx.base, "GET", "/v1/nope", headers=auth), 404, what="GET /v1/nope")
    error_body(*raw(ctx.base, "POST", "/nope", body={}, headers=auth), 404, what="POST /nope")


def check_wrong_method(ctx):
    """A known path with the wrong method is an error too, and errors are JSON (OpenAI answers
    `GET /v1/chat/completions` with {"error": {"message": "Invalid URL (GET /v1/chat/completions)",
    "type": "invalid_request_error", ...}})."""
    auth = {"Authorization": f"Bearer {ctx.key}"}
    for method, path in (("GET", "/v1/chat/completions"), ("GET", "/v1/completions"), ("POST", "/v1/models")):
        status, headers, data = raw(ctx.base, method, path, body={} if method == "POST" else None, headers=auth)
        assert status in (404, 405), f"{method} {path}: status {status}"
        error_body(status, headers, data, status, what=f"{method} {path}")


def sse_lines(resp):
    """The `data:` payloads of an SSE response, as they come."""
    while True:
        line = resp.fp.readline()
        if not line:
            return
        line = line.strip()
        if line.startswith(b"data:"):
            yield line[5:].strip()


def check_disconnect(ctx):
    before = wait_idle(ctx.base)["wgmoe_completion_tokens_total"]
    u = urllib.parse.urlsplit(ctx.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    body = {
        "model": ctx.model,
        "messages": user("Write a very long story."),
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ctx.key}"},
    )
    resp = conn.getresponse()
    assert resp.status == 200, f"status {resp.status}"
    events = sse_lines(resp)
    got = [next(events), next(events)]  # the role chunk and the first token
    assert all(g.startswith(b"{") for g in got), f"first events {got}"
    conn.sock.shutdown(2)  # the client goes away mid-stream
    conn.close()
    closed = time.time()
    m = wait_idle(ctx.base, seconds=10)
    settle = time.time() - closed
    time.sleep(0.5)
    after = metrics(ctx.base)[0]["wgmoe_completion_tokens_total"]
    assert after == m["wgmoe_completion_tokens_total"], "tokens still counted after the sequence stopped"
    generated = after - before
    assert generated < 100, f"{generated:.0f} of max_tokens 200 were generated after the client left"
    print(f"    disconnect: {generated:.0f} tokens generated, idle {settle:.2f} s after the close")


def check_metrics(ctx):
    m, text = metrics(ctx.base)
    for name in (
        "wgmoe_prompt_tokens_total",
        "wgmoe_prompt_tokens_cached_total",
        "wgmoe_completion_tokens_total",
        "wgmoe_time_to_first_token_seconds_count",
        "wgmoe_gpu_memory_bytes",
    ):
        assert m.get(name, 0) > 0, f"{name} = {m.get(name)}"
    for name in ("wgmoe_queue_depth", "wgmoe_running", "wgmoe_tokens_per_second"):
        assert name in m, f"{name} missing from /metrics"
    statuses = set(re.findall(r'^wgmoe_requests_total\{endpoint="([^"]+)",status="(\d+)"\}', text, re.M))
    for want in (("/v1/chat/completions", "200"), ("/v1/chat/completions", "400"), ("/v1/models", "401"),
                 ("/v1/chat/completions", "413"), ("other", "404"), ("/v1/completions", "200")):
        assert want in statuses, f"wgmoe_requests_total has no {want}: {sorted(statuses)}"
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types.get("wgmoe_time_to_first_token_seconds") == "histogram", f"TYPE lines {types}"
    assert types.get("wgmoe_requests_total") == "counter", f"TYPE lines {types}"


# ---------------------------------------------------------------------------------------------
# Checks on SmolLM2


def check_smol_paris(ctx):
    r = ctx.smol.chat.completions.create(
        model=ctx.smol_model, messages=user("What is the capital of France?"), max_tokens=16, temperature=0
    )
    text = r.choices[0].message.content
    assert "Paris" in text, f"SmolLM2 says {text!r}"


def check_smol_json_schema(ctx):
    # The facts are in the prompt: asked to recall a population, a 135M model writes
    # "11.1 million", which an integer schema turns into an endless 1111...
    r = ctx.smol.chat.completions.create(
        model=ctx.smol_model,
        messages=user(
            "Paris is the capital of France and has 2148271 inhabitants. "
            "Give its name, country and population as JSON."
        ),
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}},
    )
    text = r.choices[0].message.content
    try:
        obj = json.loads(text)
    except ValueError:
        raise AssertionError(f"SmolLM2 json_schema reply is not JSON ({r.choices[0].finish_reason}): {text!r}") from None
    jsonschema.validate(obj, CITY_SCHEMA)
    assert obj["country"] == "France", f"SmolLM2: {obj}"
    print(f"    SmolLM2: {text}")


CHECKS = [
    check_models,  # first: the others use the model id
    check_chat,
    check_chat_stream,
    check_completions,
    check_seed,
    check_stop,
    check_prompt_cache,
    check_json_schema,
    check_tool_call,
    check_smol_paris,
    check_smol_json_schema,
    check_smol_tools_required,
    check_auth,
    check_errors,
    check_wrong_method,
    check_disconnect,
    check_metrics,  # last: it looks at what the others did
]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, key, smol = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3].rstrip("/")
    ctx = Ctx(base, key, smol)
    failed = []
    start = time.time()
    for check in CHECKS:
        t = time.time()
        try:
            check(ctx)
        except Exception as e:  # noqa: BLE001 -- report every failure, go on with the rest
            failed.append(check.__name__)
            kind = "FAIL" if isinstance(e, (AssertionError, jsonschema.ValidationError)) else "ERROR"
            print(f"{kind} {check.__name__}: {e}", flush=True)
            if kind == "ERROR":
                traceback.print_exc(file=sys.stdout)
            if check is check_models:
                break  # nothing else can run without the model id
        else:
            print(f"ok   {check.__name__} ({time.time() - t:.1f} s)", flush=True)
    passed = len(CHECKS) - len(failed) if ctx.model else 0
    print(f"openai_client.py: {passed}/{len(CHECKS)} checks passed in {time.time() - start:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

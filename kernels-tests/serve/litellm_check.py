#!/usr/bin/env python3
"""Check a LiteLLM proxy (examples/litellm/config.yaml) in front of two `wgmoe serve` replicas.

usage: litellm_check.py PROXY_URL REPLICA_A REPLICA_B
  PROXY_URL   e.g. http://127.0.0.1:4000          (the proxy's /v1 is added)
  REPLICA_*   e.g. http://127.0.0.1:8081          (base URLs, without /v1)
env: LITELLM_MASTER_KEY  the proxy's key (sent as the API key)
     WGMOE_CHECK_MODEL   model name on the proxy (default "wgmoe")

Sends 4 chat requests through the proxy (more, at most 16, only if the random
router has not yet picked both replicas), asserts they all succeed, that the
proxy used both deployments (x-litellm-model-id header), that each replica's
wgmoe_requests_total grew, and that the proxy's /health sees both replicas.
Exits 0 on success, 1 with a message otherwise.
"""
import json
import os
import re
import sys
import urllib.request

from openai import OpenAI

MIN_REQUESTS, MAX_REQUESTS = 4, 16


def fail(msg):
    print(f"litellm_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def http_get(url, key=None, timeout=300):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def requests_total(replica):
    try:
        status, text = http_get(replica.rstrip("/") + "/metrics", timeout=30)
    except Exception as e:  # noqa: BLE001
        fail(f"GET {replica}/metrics: {e}")
    # Sum over all label sets: wgmoe_requests_total{...} N  or  wgmoe_requests_total N
    vals = re.findall(r"^wgmoe_requests_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)", text, re.M)
    if status != 200 or not vals:
        fail(f"{replica}/metrics has no wgmoe_requests_total (status {status})")
    return sum(float(v) for v in vals)


def wait_ready(proxy, seconds=180):
    """The proxy takes several seconds to start: poll its readiness endpoint."""
    import time

    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            status, _ = http_get(proxy + "/health/readiness", timeout=5)
            if status == 200:
                return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.5)
    fail(f"the proxy at {proxy} was not ready after {seconds} s ({last})")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    proxy, rep_a, rep_b = (u.rstrip("/") for u in sys.argv[1:4])
    key = os.environ.get("LITELLM_MASTER_KEY", "none")
    model = os.environ.get("WGMOE_CHECK_MODEL", "wgmoe")
    client = OpenAI(base_url=proxy + "/v1", api_key=key, timeout=600, max_retries=0)
    wait_ready(proxy)

    before = {r: requests_total(r) for r in (rep_a, rep_b)}
    used = {}
    n = 0
    while n < MIN_REQUESTS or (len(used) < 2 and n < MAX_REQUESTS):
        n += 1
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": f"Say hello ({n})."}],
                max_tokens=8,
                temperature=0,
            )
            resp = raw.parse()
        except Exception as e:  # noqa: BLE001
            fail(f"request {n} through the proxy failed: {e}")
        if not resp.choices or resp.choices[0].message is None:
            fail(f"request {n}: no choices in {resp}")
        text = resp.choices[0].message.content or ""
        dep = raw.headers.get("x-litellm-model-id", "?")
        used[dep] = used.get(dep, 0) + 1
        print(f"request {n}: deployment {dep}, finish_reason {resp.choices[0].finish_reason}, {text!r}")
    if len(used) < 2:
        fail(f"{n} requests all went to one deployment: {used}")

    after = {r: requests_total(r) for r in (rep_a, rep_b)}
    for r in (rep_a, rep_b):
        print(f"{r}: wgmoe_requests_total {before[r]:g} -> {after[r]:g}")
        if not after[r] > before[r] or after[r] <= 0:
            fail(f"replica {r} got no traffic (wgmoe_requests_total {before[r]:g} -> {after[r]:g})")

    # /health probes every deployment (background_health_checks: true answers from the last probe).
    try:
        status, body = http_get(proxy + "/health", key)
        health = json.loads(body)
    except Exception as e:  # noqa: BLE001
        fail(f"GET {proxy}/health: {e}")
    healthy, unhealthy = health.get("healthy_count"), health.get("unhealthy_count")
    print(f"proxy /health: healthy {healthy}, unhealthy {unhealthy}")
    if status != 200 or healthy != 2 or unhealthy:
        fail(f"proxy /health does not report both replicas healthy: {body[:2000]}")
    print(f"litellm_check: OK ({n} requests, deployments {used})")


if __name__ == "__main__":
    main()

"""Asserts what a real Prometheus server scraped from a local xpd cluster.

    prometheus_checks.py http://127.0.0.1:PORT MIN_ROUTER_REQUESTS

Every wait polls Prometheus' HTTP API until its condition holds or a deadline
passes (then fails, saying what it last saw). Standard library only.
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEADLINE_S = 60.0  # per condition; with a 1 s scrape interval a few seconds suffice
ROLES = {"router", "prefill", "decode", "controller"}


def get(base, path, **params):
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def query(base, promql):
    data = get(base, "/api/v1/query", query=promql)
    if data["resultType"] != "vector":
        raise RuntimeError(f"{promql}: expected a vector, got {data['resultType']}")
    return data["result"]


def wait_for(description, check):
    """Calls check() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    last = None
    while True:
        try:
            result, last = check()
        except (urllib.error.URLError, RuntimeError, OSError) as error:
            result, last = None, error
        if result:
            print(f"PASS  {description}")
            return result
        if time.monotonic() >= deadline:
            print(f"FAIL  {description}: after {DEADLINE_S:.0f} s, last seen: {last}")
            sys.exit(1)
        time.sleep(0.25)  # the poll interval of a bounded wait


def main():
    base, min_requests = sys.argv[1], int(sys.argv[2])

    def targets_up():
        active = get(base, "/api/v1/targets", state="active")["activeTargets"]
        seen = [
            (t["labels"].get("job"), t["scrapeUrl"], t["health"], t.get("lastError", ""))
            for t in active
        ]
        healthy = [t for t in active if t["labels"].get("job") == "xpd" and t["health"] == "up"]
        return len(healthy) == 4, seen

    wait_for("all four xpd processes are scraped (job=xpd, health up)", targets_up)

    def every_role():
        series = query(base, 'count by (role) ({job="xpd", __name__=~"xpd_.+"})')
        roles = {s["metric"].get("role") for s in series}
        return ROLES <= roles, sorted(r for r in roles if r)

    wait_for("xpd_* series from every role (router, prefill, decode, controller)", every_role)

    def router_requests():
        result = query(base, 'sum(xpd_requests_total{job="xpd", role="router", outcome="ok"})')
        value = float(result[0]["value"][1]) if result else 0.0
        return value >= min_requests, value

    wait_for(
        f'sum(xpd_requests_total{{role="router", outcome="ok"}}) >= {min_requests}',
        router_requests,
    )

    def labelled_series():
        router = query(
            base,
            'xpd_requests_total{job="xpd", role="router", rank="0", model="default", outcome="ok"}',
        )
        decode = query(base, 'xpd_generation_tokens_total{job="xpd", role="decode", rank="0"} > 0')
        prefill = query(base, 'xpd_prompt_tokens_total{job="xpd", role="prefill", rank="0"} > 0')
        ok = (
            len(router) == 1
            and float(router[0]["value"][1]) >= min_requests
            and len(decode) == 1
            and decode[0]["metric"].get("model")
            and len(prefill) == 1
        )
        return ok, {"router": router, "decode": decode, "prefill": prefill}

    wait_for(
        "series carry role, rank and model labels (router, prefill and decode rank 0)",
        labelled_series,
    )

    def ttft_quantile():
        result = query(
            base,
            'histogram_quantile(0.5, sum by (le) (xpd_time_to_first_token_seconds_bucket{job="xpd", role="router"}))',
        )
        value = float(result[0]["value"][1]) if result else float("nan")
        return result and value > 0, value

    wait_for("histogram_quantile over xpd_time_to_first_token_seconds is a positive number", ttft_quantile)

    def healthy_ranks():
        result = query(base, 'sum by (rank_role) (xpd_ranks{job="xpd", role="controller", state="healthy"})')
        by_role = {s["metric"].get("rank_role"): float(s["value"][1]) for s in result}
        return by_role.get("prefill") == 1 and by_role.get("decode") == 1, by_role

    wait_for("the controller's xpd_ranks counts 1 healthy prefill and 1 healthy decode rank", healthy_ranks)

    def rules_loaded():
        groups = get(base, "/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        bad = [r["name"] for r in rules if r.get("health") == "err"]
        return len(rules) > 0 and not bad, {"rules": len(rules), "errors": bad}

    wait_for("alerts.yml is loaded and its rules evaluate without errors", rules_loaded)

    def expert_parallel_series():
        exchange = query(base, 'sum(xpd_expert_exchange_seconds_count{job="xpd", role="decode"})')
        balance = query(base, 'xpd_expert_balance_ratio{job="xpd", role="controller"}')
        seen = {
            "exchanges": float(exchange[0]["value"][1]) if exchange else 0.0,
            "balance_series": len(balance),
        }
        return seen["exchanges"] > 0 and seen["balance_series"] == 1, seen

    wait_for("decode ranks time MoE exchanges; the controller exports the EP group's balance",
             expert_parallel_series)


if __name__ == "__main__":
    main()

"""Short requests' latency while one client sends long inputs to a running `coulisse serve` (not a test).

    coulisse serve -m coulisse/mini-allocine --port 8080 &
    python bench/hostile_latency.py --port 8080 --attack '{"inputs": "a" * 1_900_000}'
    python bench/hostile_latency.py --port 8080 --seconds 15 \\
        --attack '{"inputs": ["question ?", "bon film " * 210_000], "truncation_direction": "left"}'
    python bench/hostile_latency.py --port 8081 --path /embed --attack '{"inputs": "猫" * 600_000}'
    python bench/hostile_latency.py --port 8081 --path /embed --attackers 16 \
        --short '{"inputs": "Super film !"}' --attack '{"inputs": ["Un film long. " * 100] * 20}'

A client sends one short request (`--short`) every 0.1 s for `--seconds` with no one else, then as long again
while `--attackers` connections (1) each send the `--attack` body (a Python expression: `"a" * 1_900_000` builds
the text here), one request after the other. Many attackers of many inputs each test the model's queue rather
than the tokenizer's (docs/server.md, "The model's queue"). Printed: p50, p90 and max of the short requests,
quiet and attacked, and how many attack requests were answered. Every model route tokenizes on one thread: what
one request may cost it is `coulisse/interfaces/server/bounds.py`'s (docs/server.md, "Load and hostile
clients").
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import httpx


def short_latencies(url: str, body: dict, seconds: float) -> list[float]:
    latencies = []
    with httpx.Client(timeout=120) as client:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            sent = time.monotonic()
            answer = client.post(url, json=body)
            latencies.append(time.monotonic() - sent)
            if answer.status_code != 200:
                raise SystemExit(f"the short request got {answer.status_code}: {answer.text[:200]}")
            time.sleep(0.1)
    return sorted(latencies)


def line(label: str, latencies: list[float]) -> str:
    ms = [1000 * x for x in latencies]
    return (f"{label}: n={len(ms)} p50={statistics.median(ms):.0f} ms p90={ms[int(0.9 * len(ms))]:.0f} ms "
            f"max={ms[-1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--attack", required=True, help="the attacker's JSON body, as a Python expression")
    parser.add_argument("--short", default='{"inputs": "Super film !"}', help="the short request's JSON body")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--attackers", type=int, default=1, help="connections sending the attack at once")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}{args.path}"
    attack = json.dumps(eval(args.attack), ensure_ascii=False).encode()  # the caller's own expression
    short = json.loads(args.short)
    print(line("short requests, quiet", short_latencies(url, short, args.seconds)))
    stop, answered = threading.Event(), []

    def attacker():
        with httpx.Client(timeout=600) as client:
            while not stop.is_set():
                answered.append(client.post(url, content=attack, headers={"content-type": "application/json"})
                                .status_code)

    threads = [threading.Thread(target=attacker) for _ in range(args.attackers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    try:
        who = "one attacker" if args.attackers == 1 else f"{args.attackers} attackers"
        print(line(f"short requests, {who} ({len(attack):,} bytes a request)",
                   short_latencies(url, short, args.seconds)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"attack requests answered: {len(answered)} ({', '.join(sorted({str(s) for s in answered}))})")


if __name__ == "__main__":
    main()

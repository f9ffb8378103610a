"""Rotation takeover time after the node driving a rotation is lost.

Three `baton serve` nodes on one PostgreSQL database (the cluster of test_nodes.py, lease 2 s).
Each round starts a rotation whose createSecret step takes 3 s, waits until a node holds its
lease, and 0.5 s later either SIGKILLs that node (the case) or does nothing (the control, in
the same round). Reported, as medians with the spread over rounds:

- lease takeover: from the kill until another node holds the lease (at most the lease TTL
  after the killed node last renewed it);
- completion: from the kill (or the same instant in the control) until the rotation succeeded;
- the cost of losing the node: completion with a kill minus completion without.

Run: BATON_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
     BATON_BIN=$CARGO_TARGET_DIR/debug/baton .venv/bin/python tests/aws/takeover_bench.py [--rounds N]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import psql  # noqa: E402
from test_nodes import LEASE_SECONDS, Cluster, new_secret, slow_rotator, start_rotation, wait_succeeded  # noqa: E402


def one(cluster, lam, name, kill):
    arn = new_secret(cluster, name, lam)
    start_rotation(cluster, arn, lam)
    holder, _, _ = cluster.wait_for_live_lease(arn)
    time.sleep(0.5)
    t0 = time.time()
    taken = None
    if kill:
        victim = cluster.node(holder)
        cluster.kill(victim)
        while True:
            lease = cluster.lease(arn)
            if lease and lease[0] != holder and lease[2]:
                taken = time.time() - t0
                break
            assert time.time() - t0 < 60, "nobody took the lease over"
            time.sleep(0.02)
    wait_succeeded(cluster, arn, timeout=90)
    done = time.time() - t0
    if kill:
        cluster.restart(victim)
    return taken, done


def spread(values):
    return f"{statistics.median(values):.2f} s [{min(values):.2f}..{max(values):.2f}]"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        sys.exit("set BATON_TEST_POSTGRES_URL")
    name = f"baton_takeover_{os.getpid()}"
    psql(url, f"CREATE DATABASE {name}")
    base, _, _ = url.rpartition("/")
    tmp = Path(tempfile.mkdtemp())
    cluster = Cluster(tmp, f"{base}/{name}")
    try:
        lam = slow_rotator(cluster, "takeover-bench")
        takeovers, with_kill, without = [], [], []
        for r in range(args.rounds):
            cases = [True, False]
            random.shuffle(cases)
            for kill in cases:
                taken, done = one(cluster, lam, f"bench/{r}-{int(kill)}", kill)
                (with_kill if kill else without).append(done)
                if kill:
                    takeovers.append(taken)
            print(f"round {r + 1}: takeover {takeovers[-1]:.2f} s, completion with kill {with_kill[-1]:.2f} s, "
                  f"without {without[-1]:.2f} s", flush=True)
        costs = [a - b for a, b in zip(with_kill, without)]
        print()
        print(f"lease TTL {LEASE_SECONDS} s, slow step 3 s, {args.rounds} rounds")
        print(f"lease takeover after SIGKILL         {spread(takeovers)}  (bound: the lease TTL, {LEASE_SECONDS} s, after the last renewal)")
        print(f"completion after SIGKILL             {spread(with_kill)}")
        print(f"completion, no node lost (control)   {spread(without)}")
        print(f"cost of losing the driving node      {spread(costs)}")
    finally:
        cluster.stop()
        psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()

"""Import rate: `baton admin import` from one Baton into another, against a reference measured
in the same run.

A source server holds N secrets with 3 labelled versions each (AWSPREVIOUS, AWSCURRENT and
AWSPENDING). Each round imports them all into a fresh target server, then runs the import again
(nothing to do). The reference is the read floor: a boto3 loop that lists the source and reads
what an import reads (DescribeSecret, and GetSecretValue for every labelled version). Reported
as medians with the spread over rounds: secrets per second, and the import's time as a multiple
of the reference.

Run: BATON_BIN=$CARGO_TARGET_DIR/release/baton .venv/bin/python tests/aws/import_bench.py \
     [--secrets 500] [--rounds 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import BATON, BatonServer  # noqa: E402
from test_cli import env_for  # noqa: E402


def fill(sm, n):
    for i in range(n):
        name = f"bench/{i:05}"
        sm.create_secret(Name=name, SecretString=f'{{"user":"u{i}","password":"p0-{i}"}}',
                         Tags=[{"Key": "team", "Value": "bench"}])
        sm.put_secret_value(SecretId=name, SecretString=f'{{"user":"u{i}","password":"p1-{i}"}}')
        sm.put_secret_value(SecretId=name, SecretString=f'{{"user":"u{i}","password":"p2-{i}"}}',
                            VersionStages=["AWSPENDING"])


def read_floor(sm):
    started = time.perf_counter()
    for page in sm.get_paginator("list_secrets").paginate():
        for s in page["SecretList"]:
            d = sm.describe_secret(SecretId=s["Name"])
            for version in d["VersionIdsToStages"]:
                sm.get_secret_value(SecretId=s["Name"], VersionId=version)
    return time.perf_counter() - started


def import_once(source, target):
    started = time.perf_counter()
    run = subprocess.run([str(BATON), "admin", "import", "--from-endpoint", source.endpoint,
                          "--endpoint", target.endpoint], env=env_for(target), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-2000:]
    return elapsed, run.stdout.strip().splitlines()[-1]


def spread(values):
    return f"median {statistics.median(values):.2f} (spread {min(values):.2f}–{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = BatonServer(data_dir=Path(tmp) / "source", engine="sqlite").start()
        try:
            fill(source.client(), args.secrets)
            first, again, floors = [], [], []
            for r in range(args.rounds):
                target = BatonServer(data_dir=Path(tmp) / f"target{r}", engine="sqlite").start()
                try:
                    floors.append(read_floor(source.client()))
                    t, summary = import_once(source, target)
                    assert summary == f"imported={args.secrets} updated=0 unchanged=0 failed=0", summary
                    first.append(t)
                    t, summary = import_once(source, target)
                    assert summary == f"imported=0 updated=0 unchanged={args.secrets} failed=0", summary
                    again.append(t)
                finally:
                    target.stop()
        finally:
            source.stop()
    n = args.secrets
    print(f"import-bench: {n} secrets × 3 labelled versions, {args.rounds} rounds, {BATON}")
    print(f"reference, reading what an import reads (boto3): {spread(floors)} s")
    print(f"import into an empty Baton: {spread(first)} s = {spread([n / t for t in first])} secrets/s")
    print(f"  as a multiple of the reference: {spread([t / f for t, f in zip(first, floors)])}")
    print(f"second import (unchanged): {spread(again)} s = {spread([n / t for t in again])} secrets/s")


if __name__ == "__main__":
    main()

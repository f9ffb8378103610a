"""The documented comparison of BENCHMARKS.md: the same connection load as the alternating-users
test, under single-user rotation, which changes the password in place. It prints how many new
connections fail; it is a measurement, not a test.

Run (MariaDB and, as root, a private scram PostgreSQL cluster; needs `scripts/test` built):
  CARGO_TARGET_DIR=... .venv/bin/python tests/aws/db_rotation_comparison.py [--rotations 20]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import BatonServer  # noqa: E402
from test_db_rotation import MariaDB, ScramPostgres, run_load  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rotations", type=int, default=20)
    args = parser.parse_args()
    server = BatonServer(data_dir=Path(tempfile.mkdtemp(prefix="baton-cmp-")) / "data", engine="sqlite").start()
    dbs = [("mariadb", MariaDB(os.environ.get("BATON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")))]
    pg = ScramPostgres()
    dbs.append(("postgres", pg))
    try:
        sm = server.client()
        for name, db in dbs:
            db.prepare_probe()
            for strategy in ("alternating", "single"):
                results, durations = run_load(server, sm, db, f"cmp/{name}/{strategy}", strategy, args.rotations)
                connected = sum(r["connected"] for r in results)
                failed = sum(r["failed"] for r in results)
                durations.sort()
                print(f"{name:8} {strategy:11} rotations={args.rotations} connections={connected + failed} "
                      f"failed={failed} ({100 * failed / max(1, connected + failed):.2f} %) "
                      f"rotation median {durations[len(durations) // 2]:.2f} s")
    finally:
        pg.stop()
        server.stop()


if __name__ == "__main__":
    main()

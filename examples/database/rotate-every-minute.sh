#!/usr/bin/env bash
# Rotates the password of an app's MariaDB user every minute (alternating users) while "the app"
# (examples/rotating-keys' db-client: a new connection per request with the credentials its
# keyring cache holds) keeps connecting, and prints what happened after each rotation.
#
# Needs: a running `baton serve` (BATON_ENDPOINT or http://127.0.0.1:8080) with its admin key
# in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a profile), MariaDB on 127.0.0.1:3306 with a
# root account, and `cargo build -p baton-cli -p rotating-keys`.
#
#   examples/database/rotate-every-minute.sh            # every 60 s, until Ctrl-C
#   INTERVAL=5 ROTATIONS=3 examples/database/rotate-every-minute.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${CARGO_TARGET_DIR:-target}/debug"
INTERVAL="${INTERVAL:-60}"
ROTATIONS="${ROTATIONS:-0}"            # 0: forever
MYSQL_ROOT_PASSWORD="${MYSQL_ROOT_PASSWORD:-}"
NAME="${NAME:-example/app-db-$$}"
export AWS_ENDPOINT_URL="${BATON_ENDPOINT:-${AWS_ENDPOINT_URL:-http://127.0.0.1:8080}}"

echo "creating the database user app_$$ and the secrets $NAME and $NAME/master"
MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysql -uroot -h127.0.0.1 -e \
  "CREATE USER 'app_$$'@'%' IDENTIFIED BY 'first-password'; GRANT SELECT ON test.* TO 'app_$$'@'%'"
master=$(printf '{"engine":"mysql","host":"127.0.0.1","port":3306,"username":"root","password":"%s"}' \
  "$MYSQL_ROOT_PASSWORD" | "$BIN/baton" secret create "$NAME/master" --value-file - --output json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ARN"])')
printf '{"engine":"mysql","host":"127.0.0.1","port":3306,"username":"app_%s","password":"first-password","dbname":"test","masterarn":"%s"}' \
  "$$" "$master" | "$BIN/baton" secret create "$NAME" --value-file - >/dev/null
# T = 5 minutes for readers that do not report; the app reports, so rotations take seconds.
"$BIN/baton" rotation configure "$NAME" --propagation-delay 300 --retire-grace 2 >/dev/null

stats=$(mktemp)
"$BIN/db-client" --secret "$NAME" --interval-ms 20 --stats "$stats" &
app=$!
trap 'kill $app 2>/dev/null; wait $app 2>/dev/null; echo "app: $(cat "$stats")"' EXIT
sleep 2

n=0
while :; do
  n=$((n + 1))
  "$BIN/baton" rotation start "$NAME" --rotator baton-mysql >/dev/null
  until "$BIN/baton" rotation status "$NAME" --output json | grep -q '"Status": *"Succeeded"'; do sleep 0.2; done
  # (Not `baton secret get`: a read that does not report would make the next gates wait T.)
  echo "rotation $n done; app so far: $(cat "$stats")"
  [ "$ROTATIONS" -ne 0 ] && [ "$n" -ge "$ROTATIONS" ] && break
  sleep "$INTERVAL"
done

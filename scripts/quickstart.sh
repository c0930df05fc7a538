#!/usr/bin/env bash
# The quick start: build, install Ray (on first use, under ~/.rayservice), apply the example,
# wait until Ready, and send the guide's requests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=./target/release/rayservice
$bin apply -f examples/rayservice-local.yaml --wait --timeout 10m
$bin get rayservice
$bin get raycluster
echo '$ curl -X POST -H "Content-Type: application/json" 127.0.0.1:8000/fruit/ -d '"'"'["MANGO", 2]'"'"
curl -sS -X POST -H 'Content-Type: application/json' 127.0.0.1:8000/fruit/ -d '["MANGO", 2]'; echo
echo '$ curl -X POST -H "Content-Type: application/json" 127.0.0.1:8000/calc/ -d '"'"'["MUL", 3]'"'"
curl -sS -X POST -H 'Content-Type: application/json' 127.0.0.1:8000/calc/ -d '["MUL", 3]'; echo
echo "The service keeps running: stop it with '$bin delete -f examples/rayservice-local.yaml' (or '$bin down')."

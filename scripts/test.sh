#!/usr/bin/env bash
# The test command: formatting, lints, unit tests, and end-to-end tests with real Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
# A fresh machine gains nothing from incremental builds, and full debug info for every test
# binary takes tens of GB: line tables keep backtraces readable.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CARGO_PROFILE_TEST_DEBUG="${CARGO_PROFILE_TEST_DEBUG:-line-tables-only}"
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "install Ray (pinned, cached)"
RAYSERVICE_PYTHON="$(bash scripts/install-ray.sh)"
export RAYSERVICE_PYTHON

step "install the Kubernetes control plane for operator tests (built from the Go module proxy, pinned, cached)"
bash scripts/k8s-control-plane.sh install >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Each end-to-end test runs its own Ray cluster(s); two at a time fit this machine (2 cores, 24 GiB).
cargo test --workspace --locked -- --test-threads="${RAYSERVICE_TEST_THREADS:-2}"

step "done"

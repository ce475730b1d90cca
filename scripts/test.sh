#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, end-to-end on loopback) on the CPU.
# Binaries are built first because the integration tests start real worker and coordinator
# processes from target/debug/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
cargo test --workspace --locked

#!/usr/bin/env bash
# One command for issue 8's table: runs the comparison benches (sealkv, raw redb and
# SQLCipher in one criterion run), then prints each ratio with its target.
# Extra arguments go to criterion, e.g. `benches/ratios.sh -- get-1KiB`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p sealkv-benches --bench engine --bench peers "$@"
cargo run --release -q -p sealkv-benches --bin ratios

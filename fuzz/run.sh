#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, JOBS targets
# at a time, on the stable toolchain: `cargo fuzz --sanitizer none` keeps
# libFuzzer's coverage guidance and drops ASan, which needs nightly (safe
# Rust's bounds and overflow checks still abort on a bad index). Prints
# executions and coverage per target; exits non-zero on any crash, leaving
# the input in fuzz/artifacts/<target>/ (replay it with
# `cargo fuzz run -s none <target> <file>`).
#
#   fuzz/run.sh [SECONDS=30] [TARGET...]      JOBS=2 by default
#
# Seeds come from fuzz/corpus/<target> (committed); what a run learns goes to
# target/fuzz-corpus/<target> (outside git) and seeds the next run there.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
shift || true
jobs="${JOBS:-2}"
command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
    exit 1
}
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build -s none
work=../target/fuzz-corpus
mkdir -p "$work"

run_one() {
    local t="$1" log="$work/$1.log"
    mkdir -p "$work/$t" "artifacts/$t"
    if ! cargo fuzz run -s none "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -close_fd_mask=3 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        echo "FAIL $t" >"$work/$t.row"
        return 0
    fi
    local execs rate line cov ft
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    line=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    printf '%-16s %12s %10s %8s %8s\n' "$t" "$execs" "$rate" "${cov:-?}" "${ft:-?}" >"$work/$t.row"
}

running=0
for t in "${targets[@]}"; do
    rm -f "$work/$t.row"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-16s %12s %10s %8s %8s   (%ss each)\n' target execs exec/s cov ft "$secs"
for t in "${targets[@]}"; do
    if grep -q '^FAIL' "$work/$t.row"; then
        failed=1
        echo "FAIL $t: crash or error; tail of $work/$t.log:"
        grep -v '^#' "$work/$t.log" | tail -25
    else
        cat "$work/$t.row"
    fi
done
exit "$failed"

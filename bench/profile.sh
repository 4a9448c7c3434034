#!/usr/bin/env bash
# Where does Ketch spend its time under one benchmark scenario? Starts a fresh release Ketch
# member on loopback (data on disk), runs ketch-bench against it under `perf record -g`, and
# prints the hottest symbols (self time, then inclusive time). perf.data stays in the output
# directory for `perf report -i`; with inferno installed (`cargo install inferno`) it also
# writes flamegraph.svg there. Call graphs come from DWARF (release builds keep no frame
# pointers), so perf.data is large: keep runs short.
#   bash bench/profile.sh                      # put, 100 clients over 10 connections
#   bash bench/profile.sh --conns=1 --clients=1 put --total=5000 --val-size=256
# Needs perf (Debian: linux-perf). Run compare.sh first, or `cargo build --release -p ketch -p ketch-bench`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
KETCH=$TARGET_DIR/release/ketch
BENCH=$TARGET_DIR/release/ketch-bench
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
[ -x "$KETCH" ] && [ -x "$BENCH" ] || cargo build --release -p ketch -p ketch-bench >&2

if [ $# -eq 0 ]; then
    set -- --conns=10 --clients=100 put --total=100000 --key-size=8 --val-size=256 --key-space-size=100000
fi
OUT=${PROFILE_OUT:-$PWD/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
EP=127.0.0.1:${KETCH_BENCH_CLIENT_PORT:-24379}
PEER=127.0.0.1:${KETCH_BENCH_PEER_PORT:-24380}
"$KETCH" --name bench --data-dir "$OUT/data" --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
    --listen-peer-urls "http://$PEER" --initial-advertise-peer-urls "http://$PEER" \
    --initial-cluster "bench=http://$PEER" >"$OUT/ketch.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$OUT/data"' EXIT
for _ in $(seq 100); do
    "$BENCH" --endpoints="$EP" range probe --total=1 >/dev/null 2>&1 && break
    sleep 0.05
done
perf record -F 499 --call-graph dwarf,16384 -p "$PID" -o "$OUT/perf.data" >/dev/null 2>"$OUT/perf.err" &
PERF=$!
sleep 0.5
"$BENCH" --endpoints="$EP" "$@" | tee "$OUT/bench.txt" | sed -n '1,9p'
kill -INT "$PERF"
wait "$PERF" || true
set +o pipefail # `head` closes the pipes early on purpose
echo "== self time (top 25) =="
perf report -i "$OUT/perf.data" --no-children --stdio --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -25
echo "== by thread =="
perf report -i "$OUT/perf.data" --no-children --stdio --sort comm 2>/dev/null | grep -E '^ +[0-9]' | head -10
echo "== inclusive time (top 25) =="
perf report -i "$OUT/perf.data" --children --stdio --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -25
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
        --title "ketch: $*" >"$OUT/flamegraph.svg" && echo "flamegraph: $OUT/flamegraph.svg"
else
    echo "no flamegraph: cargo install inferno (inferno-collapse-perf, inferno-flamegraph)"
fi
echo "perf data: $OUT/perf.data"

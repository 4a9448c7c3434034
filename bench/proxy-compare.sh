#!/usr/bin/env bash
# Ketch's proxy against etcd 3.4's grpc-proxy, in one run on this machine:
#   bash bench/proxy-compare.sh [--quick]
# Starts a three-member Ketch cluster with a Ketch proxy (`ketch --proxy on`) in front, and a
# three-member etcd 3.4 cluster (Debian's etcd-server) with `etcd grpc-proxy start` in front,
# all on loopback with data on disk; then runs, against each proxy and against one member
# directly, the scenarios the proxy issue names:
#   - serializable range of one key, 100 clients over 10 connections (the proxy's cache);
#   - 10,000 watchers on one key, put-to-event latency (watch coalescing);
# and prints throughput and latency with the Ketch/etcd ratios, each proxy's CPU time per cached
# range (the load generator shares the two cores, so req/s alone mostly measures it), and the
# Ketch proxy's own counts (upstream watches for the 10,000 watchers, cache hits). Not part of
# tests/run.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=""
[ "${1:-}" = "--quick" ] && QUICK=1
RANGE_TOTAL=$([ -n "$QUICK" ] && echo 20000 || echo 100000)
WATCH_PUTS=$([ -n "$QUICK" ] && echo 50 || echo 200)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ketch-target}"
cargo build --release -q -p ketch -p ketch-bench
KETCH="$CARGO_TARGET_DIR/release/ketch"
BENCH="$CARGO_TARGET_DIR/release/ketch-bench"
if [ ! -x /usr/bin/etcd ]; then
    echo "installing etcd-server (etcd 3.4, the reference)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
fi
ETCD=/usr/bin/etcd

WORK="$(mktemp -d /tmp/ketch-proxy-bench.XXXXXX)"
PIDS=()
cleanup() {
    # members are started inside $(start_cluster ...), a subshell: their pids are in a file
    for p in "${PIDS[@]}" $(cat "$WORK/member-pids" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_health() { # url
    for _ in $(seq 1 200); do
        curl -fsS "$1/health" 2>/dev/null | grep -q true && return 0
        sleep 0.1
    done
    echo "not healthy: $1" >&2
    return 1
}

# start_cluster <bin> <name>: three members; prints their client endpoints (comma separated)
start_cluster() {
    local bin=$1 name=$2 initial="" cps=() pps=()
    for i in 1 2 3; do cps+=("$(free_port)"); pps+=("$(free_port)"); done
    for i in 0 1 2; do initial+="${initial:+,}m$((i + 1))=http://127.0.0.1:${pps[$i]}"; done
    for i in 0 1 2; do
        "$bin" --name "m$((i + 1))" --data-dir "$WORK/$name-m$i" \
            --listen-client-urls "http://127.0.0.1:${cps[$i]}" --advertise-client-urls "http://127.0.0.1:${cps[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${pps[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pps[$i]}" \
            --initial-cluster "$initial" --initial-cluster-token "$name" >"$WORK/$name-m$i.log" 2>&1 &
        echo $! >>"$WORK/member-pids"
    done
    for i in 0 1 2; do wait_health "http://127.0.0.1:${cps[$i]}"; done
    echo "$initial|127.0.0.1:${cps[0]},127.0.0.1:${cps[1]},127.0.0.1:${cps[2]}"
}

echo "starting clusters and proxies in $WORK" >&2
IFS='|' read -r KETCH_INITIAL KETCH_EPS <<<"$(start_cluster "$KETCH" ketch)"
IFS='|' read -r ETCD_INITIAL ETCD_EPS <<<"$(start_cluster "$ETCD" etcd)"
KP=$(free_port)
"$KETCH" --proxy on --data-dir "$WORK/ketch-proxy" --initial-cluster "$KETCH_INITIAL" \
    --listen-client-urls "http://127.0.0.1:$KP" >"$WORK/ketch-proxy.log" 2>&1 &
PIDS+=($!)
KETCH_PROXY_PID=$!
wait_health "http://127.0.0.1:$KP"
EP=$(free_port)
"$ETCD" grpc-proxy start --endpoints "$ETCD_EPS" --listen-addr "127.0.0.1:$EP" >"$WORK/etcd-proxy.log" 2>&1 &
PIDS+=($!)
ETCD_PROXY_PID=$!
wait_health "http://127.0.0.1:$EP"
KETCH_MEMBER=${KETCH_EPS%%,*}
ETCD_MEMBER=${ETCD_EPS%%,*}

# run <label> <endpoint> <scenario args...>: one JSON line into $WORK/results
run() {
    local label=$1 ep=$2
    shift 2
    "$BENCH" --json --target-name "$label" --endpoints "$ep" "$@" >>"$WORK/results" || echo "{\"target\":\"$label\",\"error\":true}" >>"$WORK/results"
}

for ep in "$KETCH_MEMBER" "$ETCD_MEMBER"; do
    ETCDCTL_API=3 etcdctl --endpoints "$ep" put bench-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
done
: >"$WORK/results"
echo "range, serializable, 100 clients / 10 conns" >&2
# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
# run_timed <pid> <label> <endpoint> <args...>: `run`, plus the CPU time <pid> spent meanwhile.
# On two cores shared with the load generator, requests per second mostly says how fast the
# load generator is; the proxy's CPU per request says what the proxy itself costs.
run_timed() {
    local pid=$1 label=$2 before after
    shift
    before=$(cpu_secs "$pid")
    run "$@"
    after=$(cpu_secs "$pid")
    echo "{\"target\":\"$label\",\"cpu_secs\":$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.3f", a - b }'),\"requests\":$RANGE_TOTAL}" >>"$WORK/cpu"
}
: >"$WORK/cpu"
run_timed "$KETCH_PROXY_PID" "ketch-proxy range-s" "127.0.0.1:$KP" --conns=10 --clients=100 range bench-key --consistency=s --total="$RANGE_TOTAL"
run_timed "$ETCD_PROXY_PID" "etcd-grpc-proxy range-s" "127.0.0.1:$EP" --conns=10 --clients=100 range bench-key --consistency=s --total="$RANGE_TOTAL"
run "ketch-member range-s" "$KETCH_MEMBER" --conns=10 --clients=100 range bench-key --consistency=s --total="$RANGE_TOTAL"
run "etcd-member range-s" "$ETCD_MEMBER" --conns=10 --clients=100 range bench-key --consistency=s --total="$RANGE_TOTAL"
echo "watch, 10,000 watchers on one key" >&2
WATCH=(--conns=10 --clients=10 watch --streams=100 --watch-per-stream=100 --watched-key-total=1 --put-total="$WATCH_PUTS" --put-rate=50)
run "ketch-proxy watch-10k" "127.0.0.1:$KP" "${WATCH[@]}"
STATS=$(curl -fsS "http://127.0.0.1:$KP/ketch/proxy/stats" || true)
run "etcd-grpc-proxy watch-10k" "127.0.0.1:$EP" "${WATCH[@]}"

python3 - "$WORK/results" "$STATS" "$WORK/cpu" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec, pos, rows = json.JSONDecoder(), 0, {}
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    rows[obj.get("target")] = obj
def metric(label, what):
    s = rows.get(label, {}).get("summary") or {}
    if what == "rps":
        return s.get("requests_per_sec")
    v = (s.get("percentiles") or {}).get(what)
    return None if v is None else v * 1000.0
def fmt(v):
    return "-" if v is None else f"{v:.3f}" if v < 100 else f"{v:.0f}"
print(f"{'target':28} {'req/s':>12} {'p50 ms':>10} {'p99 ms':>10}")
for label in rows:
    print(f"{label:28} {fmt(metric(label, 'rps')):>12} {fmt(metric(label, '50')):>10} {fmt(metric(label, '99')):>10}")
def ratio(a, b, what):
    x, y = metric(a, what), metric(b, what)
    return "-" if not x or not y else f"{x / y:.2f}x"
print()
print("cached serializable range throughput, Ketch proxy / etcd grpc-proxy:", ratio("ketch-proxy range-s", "etcd-grpc-proxy range-s", "rps"))
print("serializable range throughput, Ketch proxy / Ketch member direct:", ratio("ketch-proxy range-s", "ketch-member range-s", "rps"))
print("watch, 10,000 watchers, p99 event latency, Ketch proxy / etcd grpc-proxy:", ratio("ketch-proxy watch-10k", "etcd-grpc-proxy watch-10k", "99"))
cpu = {}
for line in open(sys.argv[3]):
    c = json.loads(line)
    cpu[c["target"]] = c["cpu_secs"] * 1e6 / c["requests"]
for label, us in cpu.items():
    print(f"{label}: proxy CPU per cached range {us:.1f} us")
if "ketch-proxy range-s" in cpu and cpu.get("etcd-grpc-proxy range-s"):
    k, e = cpu["ketch-proxy range-s"], cpu["etcd-grpc-proxy range-s"]
    print(f"proxy CPU per cached range, Ketch proxy / etcd grpc-proxy: {k / e:.2f}x (requests per CPU-second: {e / k:.2f}x)")
print("Ketch proxy counts after the watch run:", sys.argv[2])
PY

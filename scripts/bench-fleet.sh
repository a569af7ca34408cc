#!/usr/bin/env bash
# Throughput of the fleet on this machine: PROVERS reference provers
# (mmaudit-refprover --connect, each LAYERS layers of a Llama-shaped workload at the
# workers' default rates) stream through one relay into a private nats-server
# (JetStream, file storage in a temporary directory) and are verified by 1, then 3
# workers; for comparison, the same provers stream to one `mmaudit-verify serve`.
# The three are alternated ROUNDS times, each fleet run on a fresh store. Prints, per run, the
# seconds from the first connection to the last report, the bytes and chunks the relay
# stored, and MB/s and chunks/s. Everything runs on this machine: provers, relay,
# server and workers share its cores.
#
#   bash scripts/bench-fleet.sh [PROVERS] [LAYERS] [ROUNDS]     (default 16 256 2)
set -euo pipefail
cd "$(dirname "$0")/.."
provers=${1:-16}
layers=${2:-256}
rounds=${3:-2}
bin=target/release
[[ -x $bin/mmaudit-verify && -x $bin/mmaudit-refprover ]] ||
    cargo build --release -q -p mmaudit-verify -p mmaudit-tests --bin mmaudit-refprover
bash scripts/nats-server.sh >/dev/null
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
. scripts/scratch.sh bench-fleet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # FILE TEXT
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "bench-fleet: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 2
}
"$bin/mmaudit-verify" keygen --out "$work/audit.key" 2>/dev/null

run() { # WORKERS
    local w=$1 dir="$work/run-$1-$RANDOM" port relay_port i
    mkdir -p "$dir/reports"
    port=$(free_port)
    "$nats" -js -sd "$dir/store" -a 127.0.0.1 -p "$port" >"$dir/nats.log" 2>&1 &
    local server=$!
    pids+=("$server")
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
    local ws=()
    for i in $(seq "$w"); do
        "$bin/mmaudit-verify" worker --nats "nats://127.0.0.1:$port" --key-file "$work/audit.key" \
            --json-dir "$dir/reports" --max-no-session 100% >"$dir/worker$i.out" 2>"$dir/worker$i.err" &
        ws+=($!)
        pids+=($!)
        wait_for "$dir/worker$i.err" "taking segments"
    done
    relay_port=$(free_port)
    "$bin/mmaudit-verify" relay --nats "nats://127.0.0.1:$port" --listen "127.0.0.1:$relay_port" \
        >/dev/null 2>"$dir/relay.err" &
    local relay=$!
    pids+=("$relay")
    wait_for "$dir/relay.err" "listening on"
    local start end
    start=$(date +%s.%N)
    provers_to "127.0.0.1:$relay_port"
    while (($(find "$dir/reports" -name '*.json' | wc -l) < provers)); do sleep 0.02; done
    end=$(date +%s.%N)
    kill "${ws[@]}" "$relay" "$server" 2>/dev/null || true
    wait "${ws[@]}" "$relay" "$server" 2>/dev/null || true
    local failed
    failed=$(grep -L '"verdict": "pass"' "$dir"/reports/*.json | wc -l)
    python3 - "$w" "$start" "$end" "$dir/relay.err" "$failed" "$provers" <<'PY'
import re, sys
w, start, end, log, failed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
mb = chunks = 0.0
for m in re.finditer(r"closed \(([0-9.]+) MB in ([0-9]+) chunks\)", open(log).read()):
    mb += float(m.group(1)); chunks += int(m.group(2))
s = end - start
print(f"{w} worker{'s' if w != '1' else ' '}  {s:7.2f} s  {int(sys.argv[6]) / s:7.1f} streams/s  failed {failed}  {mb:7.1f} MB  {chunks:5.0f} chunks  {mb/s:6.1f} MB/s  {chunks/s:6.0f} chunks/s")
PY
}

provers_to() { # ADDR: starts the provers
    local i
    for i in $(seq "$provers"); do
        "$bin/mmaudit-refprover" --key-file "$work/audit.key" --connect "$1" \
            --layers "$layers" --seed "$i" --stream-id "$i" >/dev/null 2>&1 &
    done
}

run_serve() {
    local dir="$work/serve-$RANDOM" start end
    mkdir -p "$dir/reports"
    "$bin/mmaudit-verify" serve --listen 127.0.0.1:0 --key-file "$work/audit.key" \
        --json-dir "$dir/reports" --max-no-session 100% --view log >/dev/null 2>"$dir/serve.err" &
    local server=$!
    pids+=("$server")
    wait_for "$dir/serve.err" "listening on"
    local addr
    addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/serve.err" | head -1)
    start=$(date +%s.%N)
    provers_to "$addr"
    while (($(find "$dir/reports" -name '*.json' | wc -l) < provers)); do sleep 0.02; done
    end=$(date +%s.%N)
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    local failed
    failed=$(grep -L '"verdict": "pass"' "$dir"/reports/*.json | wc -l)
    python3 -c "
s = $end - $start
print(f'serve      {s:7.2f} s  {$provers / s:7.1f} streams/s  failed $failed')"
}

echo "bench-fleet: $provers provers x $layers layers, $rounds rounds; $(nproc) cores"
for r in $(seq "$rounds"); do
    run_serve
    run 1
    run 3
done

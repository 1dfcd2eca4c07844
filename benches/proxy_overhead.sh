#!/usr/bin/env bash
# Proxy overhead: the full default `llmgate serve` stack vs going direct vs
# nginx as a plain reverse proxy, all in front of the same instant-response
# replica (nginx `return 200` with a fixed OpenAI completion body), at 1 and
# 32 concurrent connections, measured with wrk POSTing a JSON completion.
#
#   benches/proxy_overhead.sh                 # from the repo root
#   DURATION=10 RUNS=3 CONNS="1 32" benches/proxy_overhead.sh
#
# Environment:
#   LLMGATE_BIN   gateway binary (default: $CARGO_TARGET_DIR/release/llmgate,
#                 CARGO_TARGET_DIR defaulting to target; built with
#                 `cargo build --release -p llmgate-server` when missing)
#   DURATION      seconds per wrk run (default 10), after a 2 s warm-up
#   RUNS          rounds; each round runs direct, nginx, llmgate in turn and
#                 the median of each figure over the rounds is reported
#                 (default 3)
#   CONNS         connection counts (default "1 32")
#   WRK_THREADS   wrk threads (default: 1 for 1 connection, 2 otherwise)
#   KEEP_TMP=1    keep the temp dir (configs, logs, raw wrk output)
#
# Needs nginx, wrk and curl (Debian: apt-get install nginx wrk curl); installs
# them itself when missing and run as root. Everything listens on 127.0.0.1
# ephemeral ports; every process started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LLMGATE_BIN=${LLMGATE_BIN:-$TARGET_DIR/release/llmgate}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-"1 32"}
WARMUP=2

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${need[*]} with apt-get" >&2
        apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && apt-get install -y "${need[@]}" >/dev/null; }
    else
        echo "missing: ${need[*]}; install them (Debian: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ ! -x "$LLMGATE_BIN" ]; then
    echo "building $LLMGATE_BIN" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p llmgate-server >&2
fi

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/llmgate-overhead.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free 127.0.0.1 ports, found by binding port 0 (all held until all are known).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r REPLICA_PORT NGINX_PORT GW_PORT GW_METRICS_PORT GW_ADMIN_PORT <<<"$(free_ports 5)"

wait_http() { # url, what: poll up to 10 s in 20 ms steps
    local i
    for i in $(seq 500); do
        if curl -fs -o /dev/null "$1"; then return 0; fi
        sleep 0.02
    done
    echo "$2 did not answer 200 on $1 within 10 s" >&2
    return 1
}

# ---------------------------------------------------------------- replica
BODY='{"id":"cmpl-bench","object":"text_completion","created":1700000000,"model":"llama-3-8b","choices":[{"index":0,"text":"Hello! How can I help you today?","logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}'

nginx_common() { # name
    mkdir -p "$TMP/$1"
    cat <<EOF
daemon off;
pid $TMP/$1/nginx.pid;
error_log $TMP/$1/error.log warn;
EOF
}
nginx_http_common() { # name
    cat <<EOF
    access_log off;
    client_body_temp_path $TMP/$1/body;
    proxy_temp_path $TMP/$1/proxy;
    fastcgi_temp_path $TMP/$1/fastcgi;
    uwsgi_temp_path $TMP/$1/uwsgi;
    scgi_temp_path $TMP/$1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
EOF
}

{
    nginx_common replica
    cat <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
$(nginx_http_common replica)
    server {
        listen 127.0.0.1:$REPLICA_PORT;
        location = /health { default_type text/plain; return 200 "ok\n"; }
        location /v1/ { default_type application/json; return 200 '$BODY'; }
    }
}
EOF
} >"$TMP/replica.conf"

# nginx as a plain reverse proxy: one worker per core (like llmgate's tokio
# runtime), HTTP/1.1 upstream with keepalive.
{
    nginx_common proxy
    cat <<EOF
worker_processes auto;
events { worker_connections 4096; }
http {
$(nginx_http_common proxy)
    upstream replica {
        server 127.0.0.1:$REPLICA_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/proxy.conf"

# llmgate: the default stack (every layer at its default) with rate limiting
# off and one replica, health-checked on /health, no engine-metrics scraping.
cat >"$TMP/llmgate.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
metrics_listen = "127.0.0.1:$GW_METRICS_PORT"
admin_listen = "127.0.0.1:$GW_ADMIN_PORT"

[ratelimit]
enabled = false

[[replicas]]
id = "nginx-replica"
url = "http://127.0.0.1:$REPLICA_PORT"
models = []
metrics_url = ""
EOF
# Extra TOML for experiments, e.g. LLMGATE_EXTRA_TOML=$'[queue]\nenabled = false'.
if [ -n "${LLMGATE_EXTRA_TOML:-}" ]; then
    printf '%s\n' "$LLMGATE_EXTRA_TOML" >>"$TMP/llmgate.toml"
fi

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama-3-8b","prompt":"Say hello in one short sentence.","max_tokens":16,"temperature":0}'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

"$NGINX" -c "$TMP/replica.conf" -p "$TMP/replica" >"$TMP/replica/stdout.log" 2>&1 &
PIDS+=($!)
"$NGINX" -c "$TMP/proxy.conf" -p "$TMP/proxy" >"$TMP/proxy/stdout.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
"$LLMGATE_BIN" serve --config "$TMP/llmgate.toml" \
    --listen "127.0.0.1:$GW_PORT" \
    --metrics-listen "127.0.0.1:$GW_METRICS_PORT" \
    --admin-listen "127.0.0.1:$GW_ADMIN_PORT" >"$TMP/llmgate.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")

wait_http "http://127.0.0.1:$REPLICA_PORT/health" "replica nginx"
wait_http "http://127.0.0.1:$NGINX_PORT/health" "proxy nginx"
wait_http "http://127.0.0.1:$GW_PORT/ready" "llmgate"

# Every target must answer the completion with the replica's body.
for url in "http://127.0.0.1:$REPLICA_PORT" "http://127.0.0.1:$NGINX_PORT" "http://127.0.0.1:$GW_PORT"; do
    got=$(curl -fsS "$url/v1/completions" -H 'content-type: application/json' \
        -d '{"model":"llama-3-8b","prompt":"hi","max_tokens":16}')
    if [ "$got" != "$BODY" ]; then
        echo "unexpected answer from $url/v1/completions: $got" >&2
        exit 1
    fi
done

echo "# $(nproc) cores; wrk ${DURATION}s per run after ${WARMUP}s warm-up; median of $RUNS rounds" >&2
echo "# $("$NGINX" -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $("$LLMGATE_BIN" --version)" >&2

run_wrk() { # name url conns
    local threads=${WRK_THREADS:-}
    if [ -z "$threads" ]; then
        if [ "$3" = 1 ]; then threads=1; else threads=2; fi
    fi
    wrk -t"$threads" -c"$3" -d"${WARMUP}s" -s "$TMP/post.lua" "$2/v1/completions" >/dev/null
    local before
    before=$(worker_ticks)
    wrk -t"$threads" -c"$3" -d"${DURATION}s" -s "$TMP/post.lua" "$2/v1/completions" \
        >"$TMP/wrk-$1-$3-$4.txt"
    local split=""
    if [ "$1" = nginx ]; then
        split=" busiest_worker_pct=$(busiest_share "$before" "$(worker_ticks)")"
    fi
    grep '^RESULT' "$TMP/wrk-$1-$3-$4.txt" | sed "s/^RESULT/$1 $3/; s/\$/$split/"
}

# CPU ticks of each proxy nginx worker, "pid:ticks ...". nginx lets its
# workers take connections as they come, so one run may put all 32 on one
# worker and the next split them; its req/s differs by ~20% between the two,
# so every nginx row records the busiest worker's share of nginx's CPU.
worker_ticks() {
    local w out=""
    for w in $(pgrep -P "$PROXY_PID"); do
        out+="$w:$(awk '{print $14 + $15}' "/proc/$w/stat") "
    done
    echo "$out"
}

busiest_share() { # before after
    python3 - "$1" "$2" <<'PY'
import sys
b = dict(x.split(":") for x in sys.argv[1].split())
a = dict(x.split(":") for x in sys.argv[2].split())
d = [int(a[w]) - int(b.get(w, 0)) for w in a]
print(round(100 * max(d) / sum(d)) if sum(d) else 0)
PY
}

RESULTS="$TMP/results.txt"
: >"$RESULTS"
for c in $CONNS; do
    for r in $(seq "$RUNS"); do
        run_wrk direct "http://127.0.0.1:$REPLICA_PORT" "$c" "$r" >>"$RESULTS"
        run_wrk nginx "http://127.0.0.1:$NGINX_PORT" "$c" "$r" >>"$RESULTS"
        run_wrk llmgate "http://127.0.0.1:$GW_PORT" "$c" "$r" >>"$RESULTS"
    done
done

GW_RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$GW_PID/status")
GW_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$GW_PID/status")

python3 - "$RESULTS" "$CONNS" <<'EOF'
import statistics, sys
rows = {}
splits = {}
for line in open(sys.argv[1]):
    f = line.split()
    name, conns = f[0], int(f[1])
    kv = dict(x.split("=") for x in f[2:])
    rps = int(kv["requests"]) / (int(kv["duration_us"]) / 1e6)
    rows.setdefault((name, conns), []).append(
        (rps, int(kv["p50_us"]), int(kv["p99_us"]), int(kv["errors"])))
    if "busiest_worker_pct" in kv:
        splits.setdefault(conns, []).append(f"{rps:,.0f} req/s at {kv['busiest_worker_pct']}%")
med = {}
for k, v in rows.items():
    med[k] = (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
              statistics.median(r[2] for r in v), sum(r[3] for r in v))
print("| target | conns | req/s | p50 µs | p99 µs | errors |")
print("|---|---:|---:|---:|---:|---:|")
conns = [int(c) for c in sys.argv[2].split()]
for c in conns:
    for name in ("direct", "nginx", "llmgate"):
        rps, p50, p99, err = med[(name, c)]
        print(f"| {name} | {c} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {err} |")
print()
ok = True
if 1 in conns:
    d, n, g = med[("direct", 1)], med[("nginx", 1)], med[("llmgate", 1)]
    added_g, added_n = g[1] - d[1], n[1] - d[1]
    hit = added_g <= 50
    ok &= hit
    print(f"added p50 at 1 connection over direct: llmgate {added_g:+.0f} µs, nginx {added_n:+.0f} µs"
          f"  (target llmgate <= 50 µs: {'met' if hit else 'MISSED'})")
for c in conns:
    if c == 1:
        continue
    n, g = med[("nginx", c)], med[("llmgate", c)]
    r_rps, r_p99 = g[0] / n[0], g[2] / n[2]
    hit = r_rps >= 0.8 and r_p99 <= 1.5
    ok &= hit
    print(f"llmgate / nginx at {c} connections: req/s {r_rps:.2f}x, p99 {r_p99:.2f}x"
          f"  (target >= 0.8x req/s and <= 1.5x p99: {'met' if hit else 'MISSED'})")
for c in conns:
    if c > 1 and c in splits:
        print(f"nginx at {c} connections, each round with its busiest worker's share of nginx's CPU"
              f" (100% = one worker took every connection): {'; '.join(splits[c])}")
if any(v[3] for v in med.values()):
    print("WARNING: some runs had errors (non-2xx or socket errors); see the errors column")
EOF
echo "llmgate RSS after the runs: $((GW_RSS / 1024)) MiB (peak $((GW_HWM / 1024)) MiB)"

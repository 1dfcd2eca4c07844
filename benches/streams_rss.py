#!/usr/bin/env python3
"""Gateway RSS with many concurrent open streams.

Starts SIMS slow `llmgate-sim` replicas and one `llmgate serve` in front of
them (127.0.0.1, ephemeral ports), opens STREAMS client connections at once
(asyncio, raw HTTP/1.1 over sockets, standard library only), each POSTing a
streamed completion with a large max_tokens, waits until every stream has
received its first SSE chunk, then reads the gateway's VmRSS / VmHWM from
/proc/<pid>/status. After the first chunk a client stops reading (the socket
stays open; the replicas keep producing a token every second or so), so the
measurement is the gateway's cost of holding the streams, not Python's.

    python3 benches/streams_rss.py                     # 10,000 streams
    python3 benches/streams_rss.py --streams 5000 --sims 5

Binaries: $LLMGATE_BIN and $LLMGATE_SIM_BIN, default
$CARGO_TARGET_DIR/release/{llmgate,llmgate-sim} with CARGO_TARGET_DIR
defaulting to target; built with `cargo build --release` when
missing. The gateway needs two descriptors per stream (client + upstream):
the script raises RLIMIT_NOFILE to the hard limit for itself and its
children, and lowers --streams (saying so) when the hard limit is too small.
Every process started here is stopped by PID on exit.
"""

import argparse
import asyncio
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROCS = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in PROCS:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    PROCS.clear()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http_get(port, path, timeout=1.0):
    """Status code of GET path, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(64)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def binary(env, name, package, target_dir, root):
    path = os.environ.get(env) or os.path.join(root, target_dir, "release", name)
    if not os.access(path, os.X_OK):
        log(f"building {path}")
        subprocess.run(
            ["cargo", "build", "--release", "-p", package],
            cwd=root,
            env={**os.environ, "CARGO_TARGET_DIR": target_dir},
            check=True,
        )
    return path


def start_sim(bin_path, i, speedup, logdir):
    err = open(os.path.join(logdir, f"sim-{i}.log"), "w")
    p = subprocess.Popen(
        [bin_path, "--port", "0", "--speedup", str(speedup), "--id", f"sim-{i}", "--seed", str(i)],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    PROCS.append(p)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    line = p.stdout.readline() if ready else ""
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        raise RuntimeError(f"llmgate-sim {i} did not report its address: {line!r}")
    return p, int(m.group(1))


class Counts:
    def __init__(self):
        self.connected = 0
        self.first_chunk = 0
        self.failed = 0
        self.failures = {}


async def one_stream(port, body, sem, counts, all_done, release):
    writer = None
    try:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            counts.connected += 1
            writer.write(
                (
                    "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"200":
                raise RuntimeError(f"status {status.decode()}")
            buf = b""
            while b"data:" not in buf:
                chunk = await reader.read(4096)
                if not chunk:
                    raise RuntimeError("closed before the first chunk")
                buf += chunk
        counts.first_chunk += 1
        # Hold the stream open without reading it.
        writer.transport.pause_reading()
        if counts.first_chunk + counts.failed >= all_done.target:
            all_done.set()
        await release.wait()
    except Exception as e:  # noqa: BLE001 - every failure is counted and shown
        counts.failed += 1
        key = type(e).__name__ + ": " + str(e)[:80]
        counts.failures[key] = counts.failures.get(key, 0) + 1
        if counts.first_chunk + counts.failed >= all_done.target:
            all_done.set()
    finally:
        if writer is not None:
            writer.close()


class Target(asyncio.Event):
    target = 0


async def run_clients(args, port, gw_pid):
    body = (
        '{"model":"llama-3-8b","prompt":"hi","max_tokens":%d,"stream":true}' % args.max_tokens
    ).encode()
    counts = Counts()
    sem = asyncio.Semaphore(args.open_at_once)
    all_done = Target()
    all_done.target = args.streams
    release = asyncio.Event()
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(one_stream(port, body, sem, counts, all_done, release))
        for _ in range(args.streams)
    ]
    deadline = t0 + args.timeout
    while not all_done.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(all_done.wait(), timeout=5)
        except asyncio.TimeoutError:
            pass
        log(
            f"  {time.monotonic() - t0:6.1f} s: {counts.connected} connected, "
            f"{counts.first_chunk} streaming, {counts.failed} failed, "
            f"gateway RSS {status_kib(gw_pid, 'VmRSS') / 1024:.1f} MiB"
        )
    ramp = time.monotonic() - t0
    rss = status_kib(gw_pid, "VmRSS")
    hwm = status_kib(gw_pid, "VmHWM")
    threads = status_kib(gw_pid, "Threads")
    fds = len(os.listdir(f"/proc/{gw_pid}/fd"))
    held = counts.first_chunk
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts, held, ramp, rss, hwm, threads, fds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--sims", type=int, default=10, help="replicas (each runs at most 1,024 sequences)")
    ap.add_argument("--speedup", type=float, default=0.01, help="llmgate-sim --speedup (slow: long streams)")
    ap.add_argument("--max-tokens", type=int, default=100_000)
    ap.add_argument("--open-at-once", type=int, default=256, help="connections being opened at once")
    ap.add_argument("--timeout", type=float, default=240, help="seconds to wait for every first chunk")
    args = ap.parse_args()

    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True
    ).stdout.strip() or os.getcwd()
    target_dir = os.environ.get("CARGO_TARGET_DIR", "target")
    gw_bin = binary("LLMGATE_BIN", "llmgate", "llmgate-server", target_dir, root)
    sim_bin = binary("LLMGATE_SIM_BIN", "llmgate-sim", "llmgate-sim", target_dir, root)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.streams + 256
    new_soft = hard if hard != resource.RLIM_INFINITY else max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    if want > new_soft:
        fit = (new_soft - 256) // 2
        log(
            f"RLIMIT_NOFILE hard limit {new_soft} is too small for {args.streams} streams "
            f"(the gateway needs ~{want} descriptors); running {fit} streams instead. "
            "Raise it (ulimit -Hn, as root) for the full count."
        )
        args.streams = fit
    per_replica = min(1024, -(-args.streams // args.sims) + 16)
    if per_replica * args.sims < args.streams:
        sys.exit(f"{args.sims} replicas × 1,024 sequences cannot hold {args.streams} streams; add --sims")

    tmp = tempfile.mkdtemp(prefix="llmgate-streams-rss.")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        sim_ports = [start_sim(sim_bin, i, args.speedup, tmp)[1] for i in range(args.sims)]
        port, mport, aport = free_ports(3)
        cfg = os.path.join(tmp, "llmgate.toml")
        with open(cfg, "w") as f:
            f.write(
                f"""[server]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{mport}"
admin_listen = "127.0.0.1:{aport}"
# Streams must outlive the ramp-up.
request_timeout_secs = 3600

[ratelimit]
enabled = false
"""
            )
            for i, sp in enumerate(sim_ports):
                f.write(
                    f"""
[[replicas]]
id = "sim-{i}"
url = "http://127.0.0.1:{sp}"
models = []
max_concurrent = {per_replica}
"""
                )
        gw_log = open(os.path.join(tmp, "llmgate.log"), "w")
        gw = subprocess.Popen(
            [gw_bin, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{mport}", "--admin-listen", f"127.0.0.1:{aport}"],
            stdout=gw_log,
            stderr=subprocess.STDOUT,
        )
        PROCS.append(gw)
        for _ in range(500):  # up to 10 s in 20 ms steps
            if http_get(port, "/ready") == 200:
                break
            if gw.poll() is not None:
                sys.exit(f"llmgate exited with {gw.returncode}; see {gw_log.name}")
            time.sleep(0.02)
        else:
            sys.exit("llmgate did not become ready within 10 s")
        time.sleep(1)
        idle_rss = status_kib(gw.pid, "VmRSS")
        log(
            f"llmgate ready in front of {args.sims} llmgate-sim replicas "
            f"(speedup {args.speedup}); idle RSS {idle_rss / 1024:.1f} MiB; "
            f"opening {args.streams} streams"
        )

        counts, held, ramp, rss, hwm, threads, fds = asyncio.run(run_clients(args, port, gw.pid))
        time.sleep(3)
        after = status_kib(gw.pid, "VmRSS")

        print(f"streams requested:        {args.streams}")
        print(f"streams open (1st chunk): {held}  (failed: {counts.failed}; ramp {ramp:.1f} s)")
        for k, v in sorted(counts.failures.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {v} × {k}")
        print(f"gateway idle RSS:         {idle_rss / 1024:.1f} MiB")
        print(f"gateway RSS, all open:    {rss / 1024:.1f} MiB  (VmHWM {hwm / 1024:.1f} MiB, "
              f"{threads} threads, {fds} fds)")
        if held:
            print(f"per open stream:          {(rss - idle_rss) / held:.1f} KiB")
        print(f"gateway RSS 3 s after closing: {after / 1024:.1f} MiB")
        # The target is for 10,000 streams; a smaller run is scaled up
        # linearly from its per-stream figure.
        if held:
            at_10k = idle_rss + (rss - idle_rss) / held * 10_000
            verdict = "met" if at_10k <= 150 * 1024 and held == args.streams else "MISSED"
            print(f"RSS scaled to 10,000 streams: {at_10k / 1024:.0f} MiB  "
                  f"(target <= 150 MB: {verdict})")
        if gw.poll() is not None:
            sys.exit(f"llmgate exited during the run ({gw.returncode}); see {gw_log.name}")
    finally:
        stop_all()
        if os.environ.get("KEEP_TMP") == "1":
            log(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

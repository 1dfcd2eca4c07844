#!/usr/bin/env python3
"""Check that the official OpenAI Python client works against an llmgate gateway.

Usage:
    # against a gateway that is already running on this machine
    python scripts/openai_client_check.py --base-url http://127.0.0.1:8080/v1

    # start the gateway from a built binary, check it, stop it
    python scripts/openai_client_check.py --spawn --binary target/debug/llmgate

With --spawn the gateway is started as
    llmgate serve --listen 127.0.0.1:P1 --metrics-listen 127.0.0.1:P2 \
                  --admin-listen 127.0.0.1:P3
on free loopback ports, with no config (so it serves an embedded simulated
fleet); the script waits for GET /ready (at most --ready-timeout seconds),
runs the checks, then stops the process it started.

Checks (one line each): models.list() is non-empty; a chat completion; a
streamed chat completion (at least 2 content chunks and the stream ends); a
completion. Exits 0 only when every check passes.

Needs the `openai` package (`pip install openai`). Only 127.0.0.1 is ever
contacted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import NoReturn

LOOPBACK = "127.0.0.1"
DUMMY_API_KEY = "sk-llmgate-check"


def fail(msg: str, code: int = 2) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def require_loopback(base_url: str) -> None:
    host = urllib.parse.urlsplit(base_url).hostname
    if host != LOOPBACK:
        fail(f"--base-url must point at {LOOPBACK}, got host {host!r}")


def free_ports(n: int) -> list[int]:
    # Hold all sockets open at once so the ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Gateway:
    """An `llmgate serve` process this script started, stopped by its PID."""

    def __init__(self, binary: str, extra_args: list[str]):
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            fail(f"--binary {binary!r} is not an executable file (build it with `cargo build -p llmgate-server`)")
        self.port, metrics_port, admin_port = free_ports(3)
        self.argv = [
            binary,
            "serve",
            "--listen", f"{LOOPBACK}:{self.port}",
            "--metrics-listen", f"{LOOPBACK}:{metrics_port}",
            "--admin-listen", f"{LOOPBACK}:{admin_port}",
            *extra_args,
        ]
        self.log = tempfile.TemporaryFile(mode="w+b")
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def start(self) -> None:
        print(f"spawn: {' '.join(self.argv)}")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        url = f"http://{LOOPBACK}:{self.port}/ready"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        delay = 0.05
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"gateway exited with status {code} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise RuntimeError(f"gateway not ready at {url} after {timeout:.0f} s (last: {last})")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)  # graceful drain
        try:
            proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def output_tail(self, limit: int = 4000) -> str:
        self.log.flush()
        self.log.seek(0)
        data = self.log.read()
        return data[-limit:].decode("utf-8", "replace")


# --- the checks --------------------------------------------------------------


def check_models(client) -> tuple[str, str]:
    models = list(client.models.list())
    if not models:
        raise AssertionError("models.list() returned no models")
    ids = [m.id for m in models]
    return ids[0], f"{len(ids)} model(s): {', '.join(ids[:5])}"


def check_chat(client, model: str) -> str:
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello in five words."}],
        max_tokens=32,
    )
    if not resp.choices:
        raise AssertionError("chat completion has no choices")
    content = resp.choices[0].message.content
    if not content:
        raise AssertionError("chat completion has empty message content")
    usage = f", {resp.usage.completion_tokens} completion tokens" if resp.usage else ""
    return f"{len(content)} chars{usage}, finish_reason={resp.choices[0].finish_reason}"


def check_chat_stream(client, model: str) -> str:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=64,
        stream=True,
    )
    chunks = 0
    content_chunks = 0
    finish_reason = None
    text = []
    # The client ends this loop only when the server sends `data: [DONE]` (or
    # closes the stream); an error event raises.
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                content_chunks += 1
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    if content_chunks < 2:
        raise AssertionError(f"stream had {content_chunks} content chunk(s), want at least 2")
    if finish_reason is None:
        raise AssertionError("stream ended without a finish_reason")
    return f"{chunks} chunks ({content_chunks} with content, {len(''.join(text))} chars), finish_reason={finish_reason}"


def check_completion(client, model: str) -> str:
    resp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=16)
    if not resp.choices:
        raise AssertionError("completion has no choices")
    text = resp.choices[0].text
    if not text:
        raise AssertionError("completion has empty text")
    return f"{len(text)} chars, finish_reason={resp.choices[0].finish_reason}"


def run_checks(base_url: str, model: str | None, timeout: float) -> bool:
    try:
        import openai
    except ImportError:
        fail("the `openai` package is not installed (pip install openai)")

    client = openai.OpenAI(base_url=base_url, api_key=DUMMY_API_KEY, timeout=timeout, max_retries=0)
    print(f"openai {openai.__version__} -> {base_url}")

    ok = True

    def run(name, fn, *args):
        nonlocal ok
        try:
            detail = fn(*args)
            if isinstance(detail, tuple):
                detail = detail[1]
            print(f"PASS {name}: {detail}")
        except Exception as e:  # report every check, then exit non-zero
            ok = False
            print(f"FAIL {name}: {type(e).__name__}: {e}")

    try:
        first_model, detail = check_models(client)
        print(f"PASS models.list: {detail}")
    except Exception as e:
        ok = False
        first_model = None
        print(f"FAIL models.list: {type(e).__name__}: {e}")

    model = model or first_model
    if model is None:
        print("FAIL chat.completions, chat.completions(stream), completions: no model to ask for (pass --model)")
        return False

    run(f"chat.completions ({model})", check_chat, client, model)
    run(f"chat.completions stream ({model})", check_chat_stream, client, model)
    run(f"completions ({model})", check_completion, client, model)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=f"http://{LOOPBACK}:8080/v1", help="gateway API base URL (loopback only)")
    ap.add_argument("--model", help="model to request (default: the first one models.list() returns)")
    ap.add_argument("--spawn", action="store_true", help="start the gateway from --binary instead of using --base-url")
    ap.add_argument("--binary", default="target/debug/llmgate", help="gateway binary for --spawn")
    ap.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /ready with --spawn")
    ap.add_argument("--request-timeout", type=float, default=30.0, help="per-request timeout in seconds")
    ap.add_argument("gateway_args", nargs="*", help="extra arguments for `llmgate serve` (after --)")
    args = ap.parse_args()

    if not args.spawn:
        if args.gateway_args:
            fail("extra gateway arguments only make sense with --spawn")
        require_loopback(args.base_url)
        ok = run_checks(args.base_url, args.model, args.request_timeout)
    else:
        gw = Gateway(args.binary, args.gateway_args)
        ok = False
        try:
            gw.start()
            try:
                gw.wait_ready(args.ready_timeout)
            except RuntimeError as e:
                print(f"FAIL gateway start: {e}")
                print("--- gateway output (tail) ---")
                print(gw.output_tail())
                return 1
            print(f"PASS gateway ready: {gw.base_url}")
            ok = run_checks(gw.base_url, args.model, args.request_timeout)
            if not ok:
                print("--- gateway output (tail) ---")
                print(gw.output_tail())
        finally:
            gw.stop()

    print("all checks passed" if ok else "some checks FAILED", file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What `headrank serve` does when a client leaves mid-request and when it is told to stop, on the real model.

Starts `headrank serve --port 0 --shutdown-grace GRACE` (the default HeadRank of the embedded model, as a user
would; --model for another), then:

1. disconnect: sends one ~3.5 MB `POST /v1/rerank` (--documents long documents built from DL19 BM25 passages) over
   a raw socket and closes it after --close-after seconds; reports when the server logged the 499, the
   CPU-seconds the server process burns after the close and after the 499 (utime + stime from /proc) until
   `/health` says no request is active, and how long that took;
2. shutdown: sends two --passages-passage requests (DL19 BM25 lists) at once, waits until both are in the server
   and a pass is in flight, sends SIGTERM, and reports when each answer came (503 expected) and when the
   process exited, counted from the signal.

    flock /tmp/headrank-cpu.lock .venv/bin/python benchmarks/serve_edges.py --data-dir ../shared/data \\
        --shutdown-grace 5 --out runs/serve-edges.md
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from headrank.data import default_data_dir
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import machine

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuSamples:
    """The process's CPU-seconds every 0.1 s, read in a thread: what it had burnt at a given moment."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic(), cpu_seconds(self.pid)))
            except OSError:  # the process is gone
                return
            time.sleep(0.1)

    def at(self, moment: float) -> float:
        return next(cpu for t, cpu in list(self.samples) if t >= moment)


class Log:
    """The server's output, read in a thread: when a line holding a given text first appeared."""

    def __init__(self, stream, copy: Path | None):
        self.lines: list[tuple[float, str]] = []
        self.copy = copy.open("w") if copy else None
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))
            if self.copy:
                self.copy.write(line)
                self.copy.flush()

    def first(self, text: str, after: float = 0.0) -> float | None:
        return next((t for t, line in list(self.lines) if t >= after and text in line), None)

    def port(self) -> int | None:
        """The port uvicorn says it listens on, once it has said so."""
        found = (re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line) for _, line in list(self.lines))
        return next((int(m[1]) for m in found if m), None)


def start_server(args, copy: Path | None) -> tuple[subprocess.Popen, Log, int]:
    """`headrank serve` on a port of its choosing (so no other process can take it first): (process, log, port)."""
    command = [sys.executable, "-m", "headrank.cli", "serve", "--port", "0"]
    command += ["--shutdown-grace", str(args.shutdown_grace), *(["--model", args.model] if args.model else [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = Log(server.stdout, copy)
    while server.poll() is None:
        if log.port() is not None:
            return server, log, log.port()
        time.sleep(0.2)
    raise SystemExit(f"the server exited with {server.returncode} before listening")


def health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()


def wait_for(condition, limit: float, step: float = 0.1) -> float | None:
    """Poll `condition` until it holds; the monotonic time it did, or None after `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return time.monotonic()
        time.sleep(step)
    return None


def long_documents(lists, count: int, chars: int) -> list[str]:
    """`count` documents of about `chars` characters each, made of DL19 BM25 passages in turn."""
    passages = [c.text for lst in lists for c in lst.candidates]
    docs, at = [], 0
    for _ in range(count):
        parts, size = [], 0
        while size < chars:
            parts.append(passages[at % len(passages)])
            size += len(parts[-1]) + 1
            at += 1
        docs.append(" ".join(parts))
    return docs


def disconnect(args, port: int, server: subprocess.Popen, log: Log, lists) -> dict:
    documents = long_documents(lists, args.documents, args.doc_chars)
    body = json.dumps({"query": lists[0].query, "documents": documents}).encode()
    head = "POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    start = time.monotonic()
    sock.sendall(head.encode() + body)
    cpu = CpuSamples(server.pid)
    active_seen = wait_for(lambda: health(port)["active"] > 0, args.close_after)
    time.sleep(max(0.0, start + args.close_after - time.monotonic()))
    closed = time.monotonic()
    sock.close()
    idle = wait_for(lambda: health(port)["active"] == 0 and health(port)["waiting"] == 0, 300, 0.2)
    time.sleep(0.3)  # a sample after the worker went idle
    gone = log.first('" 499', after=start)
    return {
        "body MB": round(len(body) / 1e6, 2),
        "first active (s after send)": round(active_seen - start, 1) if active_seen else "never",
        "closed at (s)": round(closed - start, 1),
        "499 logged (s after close)": round(gone - closed, 2) if gone else "never",
        "idle (s after close)": round(idle - closed, 2) if idle else "> 300",
        "CPU-s after close": round(cpu.at(idle) - cpu.at(closed), 2) if idle else "-",
        "CPU-s after 499": round(cpu.at(idle) - cpu.at(gone), 2) if idle and gone else "-",
    }


def post(port: int, body: dict, sent: list, index: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/v1/rerank", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        sent[index] = (response.status, time.monotonic(), response.read()[:200].decode(errors="replace"))
    except OSError as err:
        sent[index] = (None, time.monotonic(), repr(err))


def shutdown(args, port: int, server: subprocess.Popen, lists) -> dict:
    bodies = [
        {"query": lst.query, "documents": [c.text for c in lst.candidates[: args.passages]]} for lst in lists[1:3]
    ]
    sent: list = [None, None]
    threads = [threading.Thread(target=post, args=(port, b, sent, i)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    in_server = ("active", "waiting")
    wait_for(lambda: all(sent) or (health(port)["active"] > 0 and sum(health(port)[k] for k in in_server) == 2), 120)
    time.sleep(args.signal_after)
    cpu = cpu_seconds(server.pid)
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(600)
    exited = time.monotonic()
    for thread in threads:
        thread.join()
    return {
        "answers (s after SIGTERM)": [f"{status} at {t - signalled:.2f}" for status, t, _ in sent],
        "exit (s after SIGTERM)": round(exited - signalled, 2),
        "exit code": code,
        "CPU-s before SIGTERM": round(cpu, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--model", help="serve this model, all heads (default: the default HeadRank)")
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--documents", type=int, default=1000, help="documents of the big request")
    parser.add_argument("--passages", type=int, default=60, help="passages of each request in flight at SIGTERM")
    parser.add_argument("--close-after", type=float, default=12.0, help="seconds before the client hangs up")
    parser.add_argument("--doc-chars", type=int, default=3400, help="characters per document of the big request")
    parser.add_argument("--signal-after", type=float, default=3.0, help="seconds of work before SIGTERM")
    parser.add_argument("--out", help="markdown file for the results (the server's log goes beside it)")
    args = parser.parse_args(argv)

    lists = load_dataset("dl19", default_data_dir(args.data_dir)).judged()
    copy = Path(args.out).with_suffix(".server.log") if args.out else None
    if copy:
        copy.parent.mkdir(parents=True, exist_ok=True)
    server, log, port = start_server(args, copy)
    try:
        results = {"health": health(port), "disconnect": disconnect(args, port, server, log, lists)}
        print(results["disconnect"], flush=True)
        results["shutdown"] = shutdown(args, port, server, lists)
    finally:
        if server.poll() is None:
            server.kill()
    import torch  # noqa: F401 (machine() names torch's CPU capability once torch is imported)

    text = f"{json.dumps(results, indent=1)}\n\nmachine: {machine()}\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return results


if __name__ == "__main__":
    main()

"""Load test of `headrank serve`: N concurrent clients for T seconds on 127.0.0.1, with real DL19 lists.

Starts the server (the model loads once, before the clock starts), sends `POST /v1/rerank` requests of
--docs BM25 candidates of DL19 queries from --clients threads for --duration seconds, lets the requests in
flight finish, and reports requests/s, latency percentiles, errors, 429s and the server's peak RSS as a
markdown table (printed and written to --out). Exits 1 on any 5xx or transport error.

    flock /tmp/headrank-cpu.lock .venv/bin/python benchmarks/load_test.py --data-dir ../shared/data \\
        --clients 4 --duration 60 --docs 20 --out runs/load_test.md
"""

from __future__ import annotations

import argparse
import itertools
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from headrank.data import default_data_dir
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import format_table, machine


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | None, seconds: float) -> None:
        with self.lock:
            if status is None:
                self.transport_errors += 1
                return
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.latencies.append(seconds)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "headrank.cli", "serve", "--model", args.model, "--heads", args.heads]
    command += ["--port", str(port), "--queue-size", str(args.queue_size), "--max-active", str(args.max_active)]
    if args.max_batch_tokens:
        command += ["--max-batch-tokens", str(args.max_batch_tokens)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        while server.poll() is None:
            try:
                if client.get("/health").status_code == 200:  # 503 until the warm-up pass is done
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"the server exited with {server.returncode} before answering")


def client_loop(base_url: str, bodies, deadline: float, tally: Tally) -> None:
    with httpx.Client(base_url=base_url, timeout=None) as client:
        while time.perf_counter() < deadline:
            body = next(bodies)
            start = time.perf_counter()
            try:
                status = client.post("/v1/rerank", json=body).status_code
            except httpx.TransportError:
                status = None
            tally.add(status, time.perf_counter() - start)
            if status == 429:
                time.sleep(1.0)  # the Retry-After the server asks for


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="dl19")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--heads", default="all")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60, help="seconds during which clients send requests")
    parser.add_argument("--docs", type=int, default=20, help="documents per request (BM25 top-n)")
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--max-active", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, help="the server's token budget (default: the device's)")
    parser.add_argument("--out", help="markdown file for the table (the server's log goes beside it)")
    args = parser.parse_args(argv)

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    lists = load_dataset(args.dataset, default_data_dir(args.data_dir)).judged()
    requests = [{"query": lst.query, "documents": [c.text for c in lst.candidates[: args.docs]]} for lst in lists]
    bodies = itertools.cycle(requests)  # next() on a cycle is atomic under the GIL: threads share it
    port = free_port()
    log = Path(args.out).with_suffix(".server.log").open("w") if args.out else subprocess.DEVNULL
    server = start_server(args, port, log)
    tally = Tally()
    try:
        start = time.perf_counter()
        deadline = start + args.duration
        url = f"http://127.0.0.1:{port}"
        threads = [
            threading.Thread(target=client_loop, args=(url, bodies, deadline, tally)) for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        peak = httpx.get(f"{url}/health").json()["peak_rss_mb"]
    finally:
        server.terminate()
        server.wait()

    ok = tally.statuses.get(200, 0)
    server_errors = sum(n for s, n in tally.statuses.items() if s >= 500)
    row = {
        "clients": args.clients,
        "docs/request": args.docs,
        "wall s": round(wall, 1),
        "requests": sum(tally.statuses.values()) + tally.transport_errors,
        "ok": ok,
        "requests/s": round(ok / wall, 3),
        "p50 s": round(percentile(tally.latencies, 50), 2) if ok else "-",
        "p95 s": round(percentile(tally.latencies, 95), 2) if ok else "-",
        "p99 s": round(percentile(tally.latencies, 99), 2) if ok else "-",
        "5xx": server_errors,
        "other errors": sum(n for s, n in tally.statuses.items() if 400 <= s < 500 and s != 429)
        + tally.transport_errors,
        "429": tally.statuses.get(429, 0),
        "server peak RSS MB": peak,
    }
    table = format_table([{k: f"{v:g}" if isinstance(v, float) else v for k, v in row.items()}], list(row))
    budget = args.max_batch_tokens or "the device's default"
    note = f"\nmodel {args.model}, heads {args.heads}, max_batch_tokens {budget}, {args.dataset} BM25 lists, "
    note += f"machine: {machine()}\n"
    print(table + note)
    if args.out:
        Path(args.out).write_text(table + "\n" + note)
    if server_errors or tally.transport_errors:
        sys.exit(1)
    return row


if __name__ == "__main__":
    main()

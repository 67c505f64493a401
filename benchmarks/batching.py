"""Micro-batching off against on, on a model heavy enough for batching to matter.

The model: an MLP on the digits bundled with scikit-learn (64 pixels in, two hidden layers of
2,048), exported to ONNX; trained once into models/bench-digits-mlp. One onnxruntime call costs
about 0.8 ms for one row and 9 ms for 64 rows on the reference machine: a batch of 64 costs a
sixth of 64 single calls. It is served by web single's own code, twice: batching off (each
request calls the model on the event loop, today's path) and on (WEB_SINGLE_MAX_BATCH_SIZE=64).
wrk POSTs one row at 1, 8 and 64 connections; the rounds alternate between the servers and
connection counts (shared by benchmarks.rounds), the median round counts.

Targets (issue 12): at 64 connections at least 2 x the requests/s of batching off, with a p99 no
worse; at 1 connection no more than 10% slower than off (a lone request is not held).
"""

import json
import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.rounds import interleaved
from benchmarks.wrk import Result, answers, post, uvicorn
from shared.localmode import REPO_ROOT, free_port
from shared.testing import wait_until

ROUNDS = 3
SECONDS = 8
CONNECTIONS = (1, 8, 64)
MODEL_DIR = REPO_ROOT / "models" / "bench-digits-mlp"


def heavy_model() -> Path:
    """The digits MLP, trained once (about 20 s) and kept in models/."""
    if not (MODEL_DIR / "model.json").exists():
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from shared.training import Dataset, export

        digits = load_digits()
        data = Dataset(
            digits.data.astype(np.float32),
            digits.target,
            [str(d) for d in digits.target_names],
            [f"pixel_{i}" for i in range(64)],
        )
        mlp = MLPClassifier((2048, 2048), max_iter=15, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 15 epochs: 97% is plenty here
            export(make_pipeline(StandardScaler(), mlp), data, "digits-mlp", "1.0.0", MODEL_DIR)
    return MODEL_DIR


def main() -> bool:
    model_dir = heavy_model()
    card = json.loads((model_dir / "model.json").read_text())
    body = json.dumps({"data": card["sample_input"]})
    servers, urls = {}, {}
    try:
        for mode, size in (("off", "0"), ("on", "64")):
            port = free_port()
            env = {**os.environ, "WEB_SINGLE_MODEL_DIR": str(model_dir)}
            env["WEB_SINGLE_MAX_BATCH_SIZE"] = size
            app = "serving_patterns.web_single.app:create_app"
            servers[mode] = uvicorn(app, port, env, factory=True)
            urls[mode] = f"http://127.0.0.1:{port}/predict"
        for mode, url in urls.items():
            wait_until(partial(answers, url, body, 200), timeout=60, what=f"batching {mode}")
        loads = {f"{m}@{c}": partial(_post, urls[m], body, c) for c in CONNECTIONS for m in urls}
        pids = {key: servers[key.split("@")[0]].pid for key in loads}
        medians = interleaved(loads, pids, ROUNDS, SECONDS)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait()

    rps, p99, cpu = medians.rps, medians.p99_ms, medians.cpu_us
    print(f"model: {card['name']} (MLP 64-2048-2048-10 on digits, ONNX), one row per request")
    head = f"{'connections':<13}{'batching':<10}{'req/s':>9}{'p99 ms':>9}"
    print(f"{head}{'CPU µs/req':>12}{'errors':>8}{'on/off':>8}")
    for c in CONNECTIONS:
        for mode in ("off", "on"):
            key = f"{mode}@{c}"
            ratio = f"{rps[key] / rps[f'off@{c}']:.2f}" if mode == "on" else ""
            figures = f"{rps[key]:>9.0f}{p99[key]:>9.1f}{cpu[key]:>12.0f}{medians.errors[key]:>8}"
            print(f"{c:<13}{mode:<10}{figures}{ratio:>8}")
    many, lone = rps["on@64"] / rps["off@64"], rps["on@1"] / rps["off@1"]
    p99_ok = p99["on@64"] <= p99["off@64"]
    errors = sum(n for key, n in medians.errors.items() if key.startswith("on@"))
    met = many >= 2 and p99_ok and lone >= 0.9 and errors == 0
    print(
        f"64 connections: {many:.2f} x off (target >= 2), p99 "
        f"{'no worse' if p99_ok else 'WORSE'}; 1 connection: {lone:.2f} x off (target >= 0.9); "
        f"errors with batching on {errors}: {'MET' if met else 'NOT MET'}"
    )
    print(
        f"({ROUNDS} rounds of {SECONDS}s in alternating order, median; wrk -t1 at 1 connection, "
        f"-t2 above; load average {medians.load_before:.1f} before, {medians.load_after:.1f} after)"
    )
    return met


def _post(url: str, body: str, connections: int, seconds: int) -> Result:
    return post(url, body, connections=connections, seconds=seconds, threads=min(2, connections))

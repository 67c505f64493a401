"""Web single's Open Inference Protocol against its /predict, one row, in one server.

One web single process serves all three (as its image does): POST /predict and the protocol's
POST /v2/models/iris/infer (JSON) under wrk -t2 -c32, and gRPC ModelInfer under a Python
grpc.aio client holding 32 calls in flight, in a process of its own. Rounds go through the
three in turn, the order reversed every other round; the median round counts. The server's CPU
time per request is measured too: it compares the three forms of the same work whatever the
load generators cost (on 2 cores the Python gRPC client takes a core from the server, which
wrk, in C, barely does).

Target (issue 8): v2 REST requests/s >= 0.8 x /predict's.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np

from benchmarks.rounds import interleaved
from benchmarks.wrk import Result, answers, post, uvicorn
from shared.localmode import REPO_ROOT, free_port
from shared.testing import wait_until

ROUNDS = 5
SECONDS = 8
ROW = [5.1, 3.5, 1.4, 0.2]
PREDICT = json.dumps({"data": [ROW]})
V2 = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
LABELS = {"predict": "/predict (JSON)", "v2": "v2 REST infer (JSON)", "grpc": "v2 gRPC ModelInfer"}


def main() -> bool:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "WEB_SINGLE_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}"}
    server = uvicorn("serving_patterns.web_single.app:create_app", http_port, env, factory=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(partial(answers, f"{base}/predict", PREDICT, 200), timeout=60, what="server")
        wait_until(partial(answers, f"{base}/v2/models/iris/infer", V2, 200), timeout=10)
        load = {
            "predict": lambda seconds: post(f"{base}/predict", PREDICT, seconds=seconds),
            "v2": lambda seconds: post(f"{base}/v2/models/iris/infer", V2, seconds=seconds),
            "grpc": lambda seconds: grpc_load(f"127.0.0.1:{grpc_port}", seconds),
        }
        medians = interleaved(load, dict.fromkeys(load, server.pid), ROUNDS, SECONDS)
    finally:
        server.terminate()
        server.wait()

    rps, p99, cpu, errors = (
        medians.rps,
        medians.p99_ms,
        medians.cpu_us,
        sum(medians.errors.values()),
    )
    print(f"{'endpoint':<28}{'req/s':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'vs /predict':>13}")
    for name, label in LABELS.items():
        versus = f"{rps[name] / rps['predict']:.2f}" if name != "predict" else ""
        print(f"{label:<28}{rps[name]:>9.0f}{p99[name]:>9.2f}{cpu[name]:>12.0f}{versus:>13}")
    ratio = rps["v2"] / rps["predict"]
    met = ratio >= 0.8 and errors == 0
    print(f"v2 REST / predict {ratio:.2f} (target >= 0.8), errors {errors}: "
          f"{'MET' if met else 'NOT MET'}")  # fmt: skip
    print(
        f"({ROUNDS} rounds of {SECONDS}s in alternating order, median; wrk -t2 -c32; gRPC: "
        f"grpc.aio, 32 in flight; load average {medians.load_before:.1f} before, "
        f"{medians.load_after:.1f} after)"
    )
    return met


def grpc_load(target: str, seconds: int, concurrency: int = 32) -> Result:
    """ModelInfer on one row for `seconds`, from a process of its own (this module's CLI)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.open_inference", "--grpc-load", target,
         "--seconds", str(seconds), "--concurrency", str(concurrency)],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    return Result(**json.loads(out))


async def _grpc_calls(target: str, seconds: float, concurrency: int) -> Result:
    import grpc

    from shared.protocol import open_inference_pb2 as pb
    from shared.protocol.open_inference_pb2_grpc import GRPCInferenceServiceStub

    request = pb.ModelInferRequest(
        model_name="iris",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=[1, 4])],
        raw_input_contents=[np.array([ROW], dtype=np.float32).tobytes()],
    )
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        infer = GRPCInferenceServiceStub(channel).ModelInfer
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                try:
                    await infer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return Result(
        rps=len(latencies) / elapsed,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        errors=errors,
        requests=len(latencies),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-load", required=True, metavar="HOST:PORT")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    result = asyncio.run(_grpc_calls(options.grpc_load, options.seconds, options.concurrency))
    print(json.dumps(result.__dict__))

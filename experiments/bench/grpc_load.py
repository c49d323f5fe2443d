"""The gRPC load: ``h2load`` (nghttp2's HTTP/2 benchmark, a C client as wrk is for HTTP/1.1) sending
one unary ``ModelInfer`` call over and over on ``connections`` connections, one call in flight on
each. A unary gRPC call is an HTTP/2 POST of the message behind a 5-byte prefix (no compression,
the length), ``content-type: application/grpc``; the call's own status comes back in the trailers,
which h2load does not read, so every load is checked first with one real gRPC call through the
protocol's stubs (its status and its answer's outputs), and the gateway's setups are checked after
by counting the rows it logged.

Why not a Python client: on this 2-core machine one asyncio gRPC client process topped out near
600 calls/s against every server (MLServer's gRPC at 1 and at 100 rows alike), so it measured
itself; h2load took MLServer to 731 calls/s on the same machine (2026-12-07).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from experiments.bench.wrk import ensure_tool

PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class GrpcResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # calls without an HTTP/2 200 (a gRPC error with a 200 is caught by the check call)


def infer_message(model: str, rows: list[list[float]]) -> bytes:
    """One [N, columns] FP64 tensor as raw bytes, Triton's client's way."""
    arr = np.asarray(rows, dtype="<f8")
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(arr.shape))
    request.raw_input_contents.append(arr.tobytes())
    return request.SerializeToString()


def check_call(target: str, message: bytes, rows: int) -> None:
    """One call through the protocol's stubs: it must succeed and answer ``rows`` predictions."""
    with grpc.insecure_channel(target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest.FromString(message), timeout=30)
    shape = list(response.outputs[0].shape) if response.outputs else []
    if not shape or shape[0] != rows:
        raise RuntimeError(f"gRPC check call to {target}: expected {rows} predictions, got outputs {shape}")


def ensure_h2load() -> str:
    return ensure_tool("h2load", "nghttp2-client")


def run_grpc(target: str, message: bytes, connections: int, seconds: float) -> GrpcResult:
    """``connections`` closed-loop connections for ``seconds`` (h2load's -D), one call in flight each."""
    with tempfile.TemporaryDirectory(prefix="grpc-load-") as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
        out = subprocess.run(
            [ensure_h2load(), "-D", str(int(seconds)), "-c", str(connections), "-m", "1", "-t", "1", "-d", str(body),
             "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}",
             f"http://{target}{PATH}"], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    found = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    if found is None:
        raise RuntimeError(f"cannot parse h2load's output:\n{out}")
    ok = np.array([int(r[2]) for r in rows if r[1] == "200"], dtype=float) / 1000.0
    ms = ok if ok.size else np.zeros(1)
    return GrpcResult(len(rows), float(found.group(1)), float(found.group(2)), float(np.percentile(ms, 50)),
                      float(np.percentile(ms, 99)), len(rows) - int(ok.size))

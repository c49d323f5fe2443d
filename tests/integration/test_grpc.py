"""The Open Inference Protocol over gRPC against a real gateway and a real MLflow: Triton's own gRPC
client for health, metadata and raw-tensor inference; the protocol's stubs for ``contents``, the
metadata that forces and sticks, and the errors with their status codes; a fuzz pass over the
message's fields; and every answered row in MLflow once under a SIGKILL of the gateway.

One MLflow server and one gateway serve the module (the SIGKILL test starts its own gateway)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from stack.iris import FEATURES
from stack.processes import GatewayProcess, MlflowServer, free_port, train_models, write_config
from tests.harness.delivery import assert_exactly_once, wait_drained

pytestmark = pytest.mark.integration
MODEL = "IrisClassifier"
COLUMNS = list(FEATURES)
ROWS = load_iris().data[::3]  # 50 rows of every class


class Served:
    def __init__(self, gw: GatewayProcess, grpc_port: int, tracking_uri: str, root: Path) -> None:
        self.gw, self.grpc_port, self.tracking_uri, self.root = gw, grpc_port, tracking_uri, root
        self.target = f"127.0.0.1:{grpc_port}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.triton = triton.InferenceServerClient(self.target)


def start(root: Path, tracking_uri: str, cache: Path, name: str = "gw", **sections: Any) -> tuple[GatewayProcess, int]:
    port = free_port()
    config = write_config(root / name / "gateway.toml", tracking_uri, root / name / "spool", cache,
                          grpc={"port": port}, **sections)
    return GatewayProcess(config=config, workdir=root / name).start(), port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("grpc")
    with MlflowServer(root / "mlflow", workers=2) as server:
        train_models(server.url)
        gw, port = start(root, server.url, root / "cache", model={"max_rows": 500})
        s = Served(gw, port, server.url, root)
        try:
            yield s
        finally:
            s.channel.close()
            gw.stop()


def infer_request(rows: np.ndarray = ROWS, **fields: Any) -> pb.ModelInferRequest:
    """One [N, 4] FP64 tensor in ``contents``."""
    request = pb.ModelInferRequest(**{"model_name": MODEL, **fields})
    tensor = request.inputs.add(name="input", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    return request


def labels(response: pb.ModelInferResponse) -> list[str]:
    out = response.outputs[0]
    assert out.name == "predict"
    if response.raw_output_contents:
        raw, items, i = response.raw_output_contents[0], [], 0
        while i < len(raw):
            n = int.from_bytes(raw[i:i + 4], "little")
            items.append(raw[i + 4:i + 4 + n].decode())
            i += 4 + n
        return items
    return [b.decode() for b in out.contents.bytes_contents]


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_health_and_metadata_through_tritons_client_and_the_health_service(served: Served) -> None:
    client = served.triton
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.is_model_ready("other")
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == COLUMNS and meta["versions"] == ["v1.0", "v2.0"]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.get_server_metadata(as_json=True)["name"] == "ab-gateway"
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "inference.GRPCInferenceService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service


def test_raw_tensors_contents_and_rest_give_the_same_predictions(served: Served) -> None:
    """Triton's client (raw bytes in and out), ``contents`` in one [N, 4] tensor and in one tensor per
    column, and REST's /v2, each forced to v2.0: the same 50 labels."""
    tensor = triton.InferInput("input", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)
    result = served.triton.infer(MODEL, [tensor], model_version="v2.0",
                                 outputs=[triton.InferRequestedOutput("predict"),
                                          triton.InferRequestedOutput("predict_proba")])
    raw_labels = [b.decode() for b in result.as_numpy("predict")]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(ROWS), 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert result.get_response().model_version == "v2.0"

    contents = served.stub.ModelInfer(infer_request(model_version="v2.0"))
    assert not contents.raw_output_contents and contents.model_version == "v2.0"
    per_column = pb.ModelInferRequest(model_name=MODEL, model_version="v2.0")
    for j, name in enumerate(COLUMNS):
        per_column.inputs.add(name=name, datatype="FP64", shape=[len(ROWS)]).contents.fp64_contents.extend(ROWS[:, j])
    rest = httpx.post(f"{served.gw.url}/v2/models/{MODEL}/versions/v2.0/infer", timeout=10, json={
        "inputs": [{"name": "input", "shape": list(ROWS.shape), "datatype": "FP64", "data": ROWS.tolist()}]}).json()
    assert raw_labels == labels(contents) == labels(served.stub.ModelInfer(per_column)) == rest["outputs"][0]["data"]
    assert set(raw_labels) == {"Setosa", "Versicolor", "Virginica"}


def test_metadata_forces_a_version_and_sticks_a_user_as_headers_do(served: Served) -> None:
    forced = served.stub.ModelInfer(infer_request(ROWS[:1]), metadata=(("x-model-version", "v1.0"),))
    assert forced.model_version == "v1.0" and forced.parameters["routing_reason"].string_param == "forced"
    for user in ("alice", "bob", "carol"):
        versions = {served.stub.ModelInfer(infer_request(ROWS[:1]), metadata=(("x-user-id", user),)).model_version
                    for _ in range(5)}
        rest = httpx.post(f"{served.gw.url}/v2/models/{MODEL}/infer", headers={"X-User-ID": user}, timeout=10,
                          json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                            "data": ROWS[:1].tolist()}]}).json()
        assert versions == {rest["model_version"]}, user
    named = served.stub.ModelInfer(infer_request(ROWS[:1], id="grpc-named-1"))
    assert named.id == "grpc-named-1" and named.parameters["feedback_receipt"].string_param


# KServe's client in a process of its own: its generated messages and Triton's both register the
# protocol's ``inference.*`` names in protobuf's one default pool, and a process can hold only one set.
KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(target, rows):
    client = InferenceGRPCClient(target, timeout=10, retries=0)
    try:
        ready = await client.is_server_ready() and await client.is_model_ready("IrisClassifier")
        tensor = InferInput("input", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        forced = await client.infer(InferRequest("IrisClassifier", [tensor], request_id="kserve-forced",
                                                 model_version="v2.0"))
        sticky = await client.infer(InferRequest("IrisClassifier", [tensor]), headers=(("x-user-id", "dora"),))
    finally:
        await client.close()
    labels = [v.decode() if isinstance(v, bytes) else v for v in forced.outputs[0].as_numpy().tolist()]
    print(json.dumps({"ready": ready, "id": forced.id, "version": forced.model_version, "labels": labels,
                      "sticky_version": sticky.model_version}))

asyncio.run(main(sys.argv[1], np.array(json.loads(sys.argv[2]))))
"""


def test_kserves_own_grpc_client_gets_the_same_answers(served: Served) -> None:
    """KServe's asynchronous InferenceGRPCClient (its own generated messages of the same protocol):
    readiness, a forced inference with its InferRequest and InferInput, and a sticky one."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", KSERVE_CLIENT, served.target, json.dumps(ROWS.tolist())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ready"] and got["id"] == "kserve-forced" and got["version"] == "v2.0"
    assert got["labels"] == labels(served.stub.ModelInfer(infer_request(model_version="v2.0")))
    rest = httpx.post(f"{served.gw.url}/v2/models/{MODEL}/infer", headers={"X-User-ID": "dora"}, timeout=10,
                      json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                        "data": ROWS[:1].tolist()}]}).json()
    assert got["sticky_version"] == rest["model_version"]


def _two_inputs_one_raw() -> pb.ModelInferRequest:
    request = infer_request(ROWS[:2])
    request.raw_input_contents.append(ROWS[:2].tobytes())
    return request


def _bad_shape() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP64", shape=[2, 5]).contents.fp64_contents.extend([1.0] * 10)
    return request


def _wrong_field() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP64", shape=[1, 4]).contents.int_contents.extend([1, 2, 3, 4])
    return request


def _short_raw() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP64", shape=[2, 4])
    request.raw_input_contents.append(b"\0" * 60)  # seven and a half FP64 values
    return request


def _out_of_bounds() -> pb.ModelInferRequest:
    return infer_request(np.array([[5.1, 3.5, 1.4, -0.2]]))


@pytest.mark.parametrize(("build", "code", "says"), [
    (lambda: pb.ModelInferRequest(model_name=MODEL), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
    (_bad_shape, grpc.StatusCode.INVALID_ARGUMENT, "'input'"),
    (_wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "contents.fp64_contents"),
    (_two_inputs_one_raw, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"),
    (_short_raw, grpc.StatusCode.INVALID_ARGUMENT, "FP64"),
    (_out_of_bounds, grpc.StatusCode.INVALID_ARGUMENT, "petal_width"),
    (lambda: infer_request(np.ones((501, 4))), grpc.StatusCode.RESOURCE_EXHAUSTED, "500"),
    (lambda: infer_request(model_name="Nope"), grpc.StatusCode.NOT_FOUND, "Nope"),
    (lambda: infer_request(model_version="v9"), grpc.StatusCode.INVALID_ARGUMENT, "v9"),
    (lambda: infer_request(id="not an id!"), grpc.StatusCode.INVALID_ARGUMENT, "id"),
], ids=["no-inputs", "shape", "datatype-field", "raw-and-contents", "raw-size", "bounds", "rows", "model",
        "version", "request-id"])
def test_bad_input_gets_its_status_code_naming_the_field(served: Served, build: Any, code: grpc.StatusCode,
                                                         says: str) -> None:
    got, details = code_of(lambda: served.stub.ModelInfer(build()))
    assert got == code and says in details, (got, details)


def test_a_message_past_the_size_limit_is_resource_exhausted(served: Served) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP64", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * (17 * 1024 * 1024))  # [http] max_body_mb is 16
    got, _ = code_of(lambda: served.stub.ModelInfer(request))
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED


_DATATYPES = st.sampled_from(["FP64", "FP32", "FP16", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "fp64", "", "X"])
_TENSORS = st.fixed_dictionaries({
    "name": st.sampled_from(["input", *COLUMNS, "", "other", "\u00e9"]),
    "datatype": _DATATYPES,
    "shape": st.lists(st.integers(-3, 6), max_size=3),
    "fp64": st.lists(st.floats(allow_nan=True), max_size=12),
    "ints": st.lists(st.integers(-2**31, 2**31 - 1), max_size=12),
    "bytes": st.lists(st.binary(max_size=6), max_size=6),
})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=st.lists(_TENSORS, max_size=5), raw=st.lists(st.binary(max_size=80), max_size=6),
       version=st.sampled_from(["", "v1.0", "v2.0", "x"]), outputs=st.lists(st.sampled_from(
           ["predict", "predict_proba", "other"]), max_size=2), rid=st.sampled_from(["", "ok-1", "bad id"]))
def test_fuzzed_messages_never_answer_unknown_or_internal(served: Served, tensors: list[dict[str, Any]],
                                                           raw: list[bytes], version: str, outputs: list[str],
                                                           rid: str) -> None:
    request = pb.ModelInferRequest(model_name=MODEL, model_version=version, id=rid)
    for t in tensors:
        spec = request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        spec.contents.fp64_contents.extend(t["fp64"])
        spec.contents.int_contents.extend(t["ints"])
        spec.contents.bytes_contents.extend(t["bytes"])
    request.raw_input_contents.extend(raw)
    for name in outputs:
        request.outputs.add(name=name)
    try:
        served.stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), exc.details()


@pytest.mark.slow
def test_every_answered_row_is_in_mlflow_once_under_a_sigkill(served: Served) -> None:
    """Two clients send over gRPC while the gateway is SIGKILLed; the restarted gateway exports what
    its spool holds: every answered request id has exactly one run."""
    gw, port = start(served.root, served.tracking_uri, served.root / "cache", name="killed",
                     mlflow={"experiment": "grpc-sigkill"})
    answered: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def client(k: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    response = stub.ModelInfer(infer_request(ROWS[n % 50:n % 50 + 1], id=f"g{k}-{n}"), timeout=5)
                except grpc.RpcError:
                    time.sleep(0.05)
                    continue
                with lock:
                    answered.append(response.id)
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    gw.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(answered) > 50
    gw.start()
    try:
        wait_drained(gw)
        counts = assert_exactly_once(served.tracking_uri, answered, "grpc-sigkill")
        assert counts["in_mlflow"] == len(answered)
    finally:
        gw.stop()

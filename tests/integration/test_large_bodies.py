"""The second attack's large bodies against a real gateway: each is refused from its counts in a
moment, and /healthz keeps answering meanwhile (a 1.3 MB CSV of 100,000 columns froze every request
for 14.8 s; a 10 MB one of 1.5 M columns took 273.6 s to get its 422)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from stack.iris import FEATURES
from stack.processes import GatewayProcess, local_models_config

pytestmark = pytest.mark.integration

COLUMNS = list(FEATURES)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, local_models: dict[str, str]) -> Iterator[str]:
    work = tmp_path_factory.mktemp("large-bodies")
    with GatewayProcess(config=local_models_config(work, local_models), workdir=work) as gw:
        yield gw.url


def _oip_binary(rows: int) -> tuple[bytes, dict[str, str]]:
    raw = np.ones((rows, 4), dtype=np.float64).tobytes()
    header = json.dumps({"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def _bodies() -> list[tuple[str, str, bytes, dict[str, str], int]]:
    csv = {"Content-Type": "text/csv"}
    wide = ",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join(["1.0"] * 100_000) + "\n"
    wider = ",".join(f"c{i}" for i in range(1_500_000)) + "\n"
    oip_body, oip_headers = _oip_binary(400_000)
    split = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]] * 550_000}})
    return [
        ("CSV, 100,000 columns", "/invocations", wide.encode(), csv, 422),
        ("CSV, 1.5 M columns", "/invocations", wider.encode(), csv, 422),
        ("CSV, 1 M rows", "/invocations", ("a,b,c,d\n" + "1,2,3,4\n" * 1_000_000).encode(), csv, 413),
        ("dataframe_split, 550,000 rows", "/invocations", split.encode(), {"Content-Type": "application/json"}, 413),
        ("OIP binary, 400,000 rows", "/v2/models/model/infer", oip_body, oip_headers, 413),
        ("OIP shape [0, 4]", "/v2/models/model/infer",
         json.dumps({"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}]}).encode(),
         {"Content-Type": "application/json"}, 400),
        ("empty dataframe_split", "/invocations",
         json.dumps({"dataframe_split": {"columns": COLUMNS, "data": []}}).encode(),
         {"Content-Type": "application/json"}, 400),
    ]


def test_large_bodies_are_refused_at_once_and_healthz_keeps_answering(gateway: str) -> None:
    model = httpx.get(gateway + "/v2/models/model").status_code
    names = httpx.get(gateway + "/variants").json()["model"]["name"]
    probes: list[float] = []
    stop = threading.Event()
    # Built before the probes start: building them holds this process's GIL, which the probing thread
    # would count as the gateway's delay (1.6 s once on a slow machine).
    bodies = _bodies()

    def probe() -> None:
        with httpx.Client(base_url=gateway, timeout=30) as http:
            while not stop.wait(0.02):
                start = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                probes.append((time.perf_counter() - start) * 1000)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    answers = []
    try:
        with httpx.Client(base_url=gateway, timeout=120) as http:
            for what, path, body, headers, status in bodies:
                path = path.replace("/models/model/", f"/models/{names}/") if model == 404 else path
                start = time.perf_counter()
                r = http.post(path, content=body, headers=headers)
                answers.append((what, r.status_code, round(time.perf_counter() - start, 2), r.text[:120]))
                assert r.status_code == status, (what, r.status_code, r.text[:300])
            assert http.post("/predict", json=FEATURES).status_code == 200
        time.sleep(1.0)  # the probes go on a moment after
    finally:
        stop.set()
        prober.join(30)
    for answer in answers:
        print(answer)
    print(f"/healthz during them: {len(probes)} probes, p50 {statistics.median(probes):.1f} ms, "
          f"max {max(probes):.1f} ms")
    assert all(seconds < 5 for _, _, seconds, _ in answers), answers
    assert len(probes) > 20 and max(probes) < 500  # the event loop was never held (14.8 s before)

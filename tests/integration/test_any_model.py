"""Models the project has never seen, served by changing only [[variants]] model_uri and the experiment:
every protocol (the seed's /predict, MLflow's /invocations, the Open Inference Protocol) through its
own client where one exists, then every row checked in MLflow exactly once and counted by the report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.domain.contract import param_names
from stack.processes import ROOT, GatewayProcess, MlflowServer
from tests.harness.any_models import DIABETES, WINE, diabetes_frame, register_any_models, wine_frame
from tests.harness.delivery import wait_drained

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def any_models(mlflow_server: MlflowServer) -> dict[str, list[str]]:
    return register_any_models(mlflow_server.url)


def _variants(name: str, versions: list[str]) -> list[dict[str, Any]]:
    return [{"name": "v1.0", "model_uri": f"models:/{name}/{versions[0]}", "weight": 0.5},
            {"name": "v2.0", "model_uri": f"models:/{name}/{versions[1]}", "weight": 0.5}]


def _rows(frame: Any, start: int, n: int) -> list[dict[str, Any]]:
    return [{k: float(v) for k, v in row.items()} for row in frame.iloc[start:start + n].to_dict("records")]


def _all_runs(tracking_uri: str, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    out, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _check_mlflow_and_report(gw: GatewayProcess, server: MlflowServer, experiment: str, served: int,
                             columns: list[str]) -> dict[str, Any]:
    """Every served row is one run (keyed by request id and row), with the signature's columns as params;
    the report counts every row."""
    wait_drained(gw)
    runs = [r for r in _all_runs(server.url, experiment) if r.data.tags.get("role") == "primary"]
    keys = [(r.data.tags["request_id"], r.data.tags["row_index"]) for r in runs]
    print(f"{experiment}: rows served {served}, primary runs in MLflow {len(runs)}, distinct {len(set(keys))}")
    assert len(runs) == served and len(set(keys)) == served, "every row exactly once"
    expected_params = set(param_names(columns).values())
    assert all(set(r.data.params) == expected_params for r in runs)
    assert all(r.data.tags["model_version"] in ("v1.0", "v2.0") for r in runs)
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", experiment, "--json",
                           "--no-log", "--tracking-uri", server.url, "--config", str(gw.config)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert sum(v["count"] for v in report["versions"].values()) == served
    assert report["warnings"] == []
    return report


def test_classifier_with_string_labels_over_every_protocol(start_gateway: Callable[..., GatewayProcess],
                                                           mlflow_server: MlflowServer,
                                                           any_models: dict[str, list[str]]) -> None:
    import tritonclient.http as triton
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    x, _ = wine_frame()
    columns = list(x.columns)
    gw = start_gateway(name="wine", variants=_variants(WINE, any_models[WINE]),
                       mlflow={"experiment": "wine-ab"})
    served = 0
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        info = http.get("/variants").json()["model"]
        assert info["kind"] == "classifier" and info["labels"] == ["cultivar_a", "cultivar_b", "cultivar_c"]
        assert [c["name"] for c in info["inputs"]] == columns
        # The seed's endpoint: one row, then a batch (a JSON list), and probabilities on request.
        one = http.post("/predict", json=_rows(x, 0, 1)[0])
        assert one.status_code == 200 and one.json()["prediction"] == "cultivar_a", one.text
        assert one.json()["prediction_class"] == 0 and one.headers["X-Model-Version"] in ("v1.0", "v2.0")
        served += 1
        batch = http.post("/predict?probabilities=true", json=_rows(x, 60, 8), headers={"X-User-ID": "zoë".encode()})
        body = batch.json()
        assert batch.status_code == 200 and len(body["predictions"]) == 8 and batch.headers["X-Routing-Reason"] == \
            "sticky"
        assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in body["predictions"])
        served += 8
        # The same user, a non-ASCII key sent as UTF-8 bytes, sticks to one version.
        again = http.post("/predict", json=_rows(x, 70, 2), headers={"X-User-ID": "zoë".encode()})
        assert again.headers["X-Model-Version"] == batch.headers["X-Model-Version"]
        served += 2
        # SageMaker's variant header forces a version too.
        forced = http.post("/predict", json=_rows(x, 1, 1)[0], headers={"X-Amzn-SageMaker-Target-Variant": "v2.0"})
        assert forced.headers["X-Model-Version"] == "v2.0" and forced.headers["X-Routing-Reason"] == "forced"
        served += 1
        # MLflow's scoring protocol, every input format.
        recs = _rows(x, 100, 3)
        formats = {
            "dataframe_split": {"dataframe_split": {"columns": columns, "data": [list(r.values()) for r in recs]}},
            "dataframe_records": {"dataframe_records": recs},
            "instances": {"instances": recs},
            "inputs": {"inputs": {c: [r[c] for r in recs] for c in columns}},
            "params": {"dataframe_records": recs, "params": {"probabilities": True}},
        }
        for name, payload in formats.items():
            r = http.post("/invocations", json=payload)
            assert r.status_code == 200, (name, r.text)
            assert len(r.json()["predictions"]) == 3 and "X-Model-Version" in r.headers, name
            served += 3
        assert "probabilities" in r.json()
        csv = io.StringIO()
        x.iloc[120:124].to_csv(csv, index=False)
        r = http.post("/invocations", content=csv.getvalue(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 4, r.text
        served += 4
        bad = http.post("/invocations", json={"dataframe_records": [recs[0], {**recs[1], "proline": "lots"}]})
        assert bad.status_code == 422 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert bad.json()["errors"][0] == {"row": 1, "field": "proline", "message": bad.json()["errors"][0]["message"]}
        assert http.get("/ping").status_code == 200 and http.get("/version").text.startswith("3.17")
    # MLflow's own scoring client, unchanged, with a DataFrame.
    client = ScoringServerClient("127.0.0.1", gw.port)
    client.wait_server_ready(timeout=10)
    result = client.invoke(x.iloc[130:135])
    assert len(result.get_predictions()) == 5
    served += 5
    # The Open Inference Protocol through Triton's client: metadata, then inference with binary tensors
    # (its default), JSON tensors, one [N, 13] tensor, and a forced version.
    triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{gw.port}")
    assert triton_client.is_server_live() and triton_client.is_server_ready() and triton_client.is_model_ready(WINE)
    meta = triton_client.get_model_metadata(WINE)
    assert [i["name"] for i in meta["inputs"]] == columns and meta["outputs"][0]["name"] == "predict"
    sample = x.iloc[140:146]
    for binary in (True, False):
        inputs = []
        for col in columns:
            t = triton.InferInput(col, [len(sample)], "FP64")
            t.set_data_from_numpy(sample[col].to_numpy(dtype=np.float64), binary_data=binary)
            inputs.append(t)
        res = triton_client.infer(WINE, inputs, request_id=f"oip-{binary}")
        labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("predict").tolist()]
        assert len(labels) == 6 and set(labels) <= {"cultivar_a", "cultivar_b", "cultivar_c"}
        assert res.get_response()["id"] == f"oip-{binary}" and res.get_response()["model_version"] in ("v1.0", "v2.0")
        served += 6
    matrix = triton.InferInput("input-0", [4, len(columns)], "FP64")
    matrix.set_data_from_numpy(x.iloc[150:154].to_numpy(dtype=np.float64), binary_data=False)
    res = triton_client.infer(WINE, [matrix], model_version="v1.0",
                              outputs=[triton.InferRequestedOutput("predict", binary_data=False)])
    assert res.get_response()["model_version"] == "v1.0" and len(res.as_numpy("predict")) == 4
    served += 4
    with pytest.raises(Exception, match="unknown model"):
        triton_client.infer("NoSuchModel", [matrix])
    report = _check_mlflow_and_report(gw, mlflow_server, "wine-ab", served, columns)
    assert report["kind"] == "classifier" and set(report["labels"]) <= {"cultivar_a", "cultivar_b", "cultivar_c"}


def test_regressor_over_every_protocol(start_gateway: Callable[..., GatewayProcess], mlflow_server: MlflowServer,
                                       any_models: dict[str, list[str]]) -> None:
    x, _ = diabetes_frame()
    columns = list(x.columns)
    gw = start_gateway(name="diabetes", variants=_variants(DIABETES, any_models[DIABETES]),
                       mlflow={"experiment": "diabetes-ab"}, routing={"mode": "shadow"})
    served = 0
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        assert http.get("/variants").json()["model"]["kind"] == "regressor"
        one = http.post("/predict", json=_rows(x, 0, 1)[0])
        assert one.status_code == 200 and isinstance(one.json()["prediction"], float), one.text
        assert "prediction_class" not in one.json()
        fb = http.post("/feedback", json={"request_id": one.json()["request_id"], "true_label": 151.0,
                                          "receipt": one.headers["x-feedback-receipt"]})  # its own answer
        assert fb.status_code == 202 and fb.json()["abs_error"] == pytest.approx(abs(151 - one.json()["prediction"]))
        served += 1
        batch = http.post("/predict", json=_rows(x, 10, 20))
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 20
        served += 20
        for payload in ({"dataframe_split": {"columns": columns, "data": x.iloc[40:45].to_numpy().tolist()}},
                        {"instances": _rows(x, 50, 5)}, {"inputs": _rows(x, 60, 5)}):
            r = http.post("/invocations", json=payload)
            assert r.status_code == 200 and all(isinstance(v, float) for v in r.json()["predictions"]), r.text
            served += 5
        oip = {"id": "reg-1", "inputs": [{"name": c, "shape": [3, 1], "datatype": "FP64",
                                          "data": x[c].iloc[70:73].tolist()} for c in columns]}
        r = http.post(f"/v2/models/{DIABETES}/infer", json=oip)
        assert r.status_code == 200 and r.json()["outputs"][0]["datatype"] == "FP64" and r.json()["id"] == "reg-1"
        served += 3
        # Limits and bad rows: nothing of a refused request is logged.
        too_many = http.post("/predict", json=_rows(x, 0, 1) * 1001)
        assert too_many.status_code == 413 and too_many.json()["limit"] == 1000
        bad = http.post("/predict", json=[_rows(x, 0, 1)[0], {**_rows(x, 1, 1)[0], "bmi": None}])
        assert bad.status_code == 422 and bad.json()["errors"][0]["row"] == 1 and bad.json()["errors"][0][
            "field"] == "bmi"
        oip_bad = http.post(f"/v2/models/{DIABETES}/infer", json={"inputs": [{"name": "nope", "shape": [1],
                                                                                "datatype": "FP64", "data": [1]}]})
        assert oip_bad.status_code == 400 and "nope" in oip_bad.json()["error"]
    report = _check_mlflow_and_report(gw, mlflow_server, "diabetes-ab", served, columns)
    assert report["kind"] == "regressor" and report["shadow"]["pairs"] == served
    assert report["shadow"]["difference"]["mean_abs_diff"] > 0


def test_mismatched_or_unsigned_models_stop_start_up_with_one_line(
        start_gateway: Callable[..., GatewayProcess], mlflow_server: MlflowServer,
        any_models: dict[str, list[str]], tmp_path: Any) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    mixed = [{"name": "v1.0", "model_uri": f"models:/{WINE}/{any_models[WINE][0]}", "weight": 1.0},
             {"name": "v2.0", "model_uri": f"models:/{DIABETES}/{any_models[DIABETES][0]}", "weight": 1.0}]
    gw = start_gateway(name="mixed", variants=mixed, wait_ready=False)
    assert gw.proc is not None and gw.proc.wait(timeout=120) == 1
    line = [ln for ln in gw.log_text().splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "take different inputs" in line[0] and "'bmi'" in line[0], gw.log_text()[-2000:]
    unsigned = tmp_path / "unsigned"
    dx, dy = diabetes_frame()
    mlflow.sklearn.save_model(LinearRegression().fit(dx.to_numpy(), dy), str(unsigned),
                              serialization_format="cloudpickle")
    gw = start_gateway(name="unsigned", wait_ready=False,
                       variants=[{"name": "v1.0", "model_uri": str(unsigned), "weight": 1.0}])
    assert gw.proc is not None and gw.proc.wait(timeout=120) == 1
    line = [ln for ln in gw.log_text().splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "has no signature" in line[0] and str(unsigned) in line[0]

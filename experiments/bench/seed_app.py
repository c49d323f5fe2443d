"""The seed document's design, for the benchmark's baseline: one MLflow run per request, written
synchronously inside the request with MLflow's fluent client, exactly as the seed's handler does.

    python -m experiments.bench.seed_app --port P --tracking-uri URI --model-uri models:/IrisClassifier/1
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from fastapi import FastAPI, Form

IRIS_CLASSES = {0: "Setosa", 1: "Versicolor", 2: "Virginica"}


def create_seed_app(model_uri: str, experiment: str) -> FastAPI:
    import mlflow
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    mlflow.set_experiment(experiment)
    app = FastAPI(title="seed-style iris API")

    # As in the seed: an async handler that does blocking MLflow calls inside the request.
    @app.post("/predict")
    async def predict(sepal_length: float = Form(...), sepal_width: float = Form(...),
                      petal_length: float = Form(...), petal_width: float = Form(...)) -> dict[str, str]:
        start_time = time.time()
        features = np.array([sepal_length, sepal_width, petal_length, petal_width]).reshape(1, -1)
        pred = model.predict(features)
        flower_name = IRIS_CLASSES.get(int(pred[0]), "unknown")
        inference_time = time.time() - start_time
        with mlflow.start_run(run_name=f"prediction_{int(time.time())}"):
            mlflow.log_params({"sepal_length": sepal_length, "sepal_width": sepal_width,
                               "petal_length": petal_length, "petal_width": petal_width})
            mlflow.log_metrics({"prediction_class": int(pred[0]), "inference_time_ms": inference_time * 1000})
            mlflow.set_tag("prediction", flower_name)
            mlflow.set_tag("model_version", "v1.0")
        return {"prediction": flower_name}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-uri", default="models:/IrisClassifier/1")
    parser.add_argument("--experiment", default="iris-flower-prediction")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    import mlflow
    import uvicorn

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_registry_uri(args.tracking_uri)
    uvicorn.run(create_seed_app(args.model_uri, args.experiment), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

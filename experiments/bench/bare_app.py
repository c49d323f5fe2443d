"""The benchmark's floor: the simplest FastAPI app a team would write around the same registered
model. No routing, no logging, no validation beyond FastAPI's own form parsing.

    python -m experiments.bench.bare_app --port P --tracking-uri URI [--model-uri models:/IrisClassifier/1]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from fastapi import FastAPI, Form

IRIS_CLASSES = ("Setosa", "Versicolor", "Virginica")


def create_bare_app(model_uri: str) -> FastAPI:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    app = FastAPI(title="bare iris API")

    # A plain `def` handler: FastAPI runs it in its thread pool, one model call per request.
    @app.post("/predict")
    def predict(sepal_length: float = Form(...), sepal_width: float = Form(...),
                petal_length: float = Form(...), petal_width: float = Form(...)) -> dict[str, object]:
        x = np.array([[sepal_length, sepal_width, petal_length, petal_width]])
        index = int(model.predict(x)[0])
        return {"prediction": IRIS_CLASSES[index], "prediction_class": index}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.bare_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-uri", default="models:/IrisClassifier/1")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    import uvicorn

    uvicorn.run(create_bare_app(args.model_uri), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()

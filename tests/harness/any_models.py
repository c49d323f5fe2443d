"""Two models the project has never seen, trained from scikit-learn's bundled data sets and registered
in a real MLflow: a 13-column wine classifier with string labels (some column names awkward on
purpose) and a 10-column diabetes regressor, two versions each."""

from __future__ import annotations

from typing import Any

WINE = "WineClassifier"
DIABETES = "DiabetesRegressor"
# Awkward names: a space, a dot and a slash (all allowed in MLflow keys), and parentheses (not allowed).
WINE_RENAMES = {"malic_acid": "malic acid.g/l", "color_intensity": "color intensity (au)"}


def wine_frame() -> tuple[Any, Any]:
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    x = data.frame.drop(columns="target").rename(columns=WINE_RENAMES)
    y = data.target.map(lambda i: f"cultivar_{'abc'[i]}")
    return x, y


def diabetes_frame() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    return data.frame.drop(columns="target"), data.target


def _register(tracking_uri: str, name: str, model: Any, x: Any, trusted: list[str] | None) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from models.train import pip_requirements

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{name}-training")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x.head(5), model.predict(
            x.head(5))), input_example=x.head(3), registered_model_name=name, skops_trusted_types=trusted,
            pip_requirements=pip_requirements())
    return str(info.registered_model_version)


def register_any_models(tracking_uri: str) -> dict[str, list[str]]:
    """{registered name: [version, version]}: a linear model and a tree ensemble for each data set."""
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    trees = ["sklearn.tree._tree.Tree"]
    x, y = wine_frame()
    wine = [
        _register(tracking_uri, WINE, make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y), x,
                  None),
        _register(tracking_uri, WINE, GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
                  .fit(x, y), x, trees),
    ]
    dx, dy = diabetes_frame()
    diabetes = [
        _register(tracking_uri, DIABETES, Ridge(alpha=0.5).fit(dx, dy), dx, None),
        _register(tracking_uri, DIABETES, GradientBoostingRegressor(n_estimators=30, max_depth=2, random_state=0)
                  .fit(dx, dy), dx, trees),
    ]
    return {WINE: wine, DIABETES: diabetes}

"""What every layer shares: the prediction record, the error tree, the MLflow contract, the label rule."""

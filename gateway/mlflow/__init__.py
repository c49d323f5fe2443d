"""MLflow behind one door: the only package of the gateway that imports ``mlflow`` or speaks to a
tracking server. The client and its health check, the model files, the exporter's run writer, the
routing change-log runs, the read-back of logged predictions and the shared-state ledger."""

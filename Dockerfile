# One image for the gateway, the trainer and the MLflow server, so all three run the same MLflow.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml requirements.lock README.md ./
COPY gateway ./gateway
COPY models ./models
COPY experiments ./experiments
COPY config ./config
RUN pip install -c requirements.lock . \
 && useradd --create-home --uid 10001 app \
 && mkdir -p /app/var /mlflow \
 && chown -R app:app /app/var /mlflow

USER app
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["python", "-m", "gateway", "--config", "config/gateway.toml", "--host", "0.0.0.0", "--port", "8000"]

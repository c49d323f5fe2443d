"""python -m gateway --config FILE [--host H] [--port P]"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.cli import start_cli
from gateway.config.settings import DEFAULT_CONFIG_PATH
from gateway.domain.messages import without_credentials

EPILOG = """\
settings:
  Every other setting is a key of the config file; each has a default, listed with its meaning in
  docs/configuration.md (the shipped config/gateway.toml shows the common ones). An environment
  variable overrides any key: GATEWAY_<SECTION>__<KEY>, e.g.
    GATEWAY_ROUTING__MODE=shadow  GATEWAY_MLFLOW__GRANULARITY=window  GATEWAY_SPOOL__DIR=/data/spool
  MLFLOW_TRACKING_URI overrides [mlflow] tracking_uri. A GATEWAY_ variable that names no setting
  stops start-up, as an unknown key in the file does. GATEWAY_ADMIN_TOKEN turns the /admin routes on.

secrets (environment only; docs/feedback.md):
  GATEWAY_FEEDBACK_TOKEN  label pipelines' /feedback token (clients use their answers' receipts)
  GATEWAY_RECEIPT_KEY, GATEWAY_PSEUDONYM_KEY  HMAC keys; required and shared by replicas, else made
                          once in <spool.dir>/keys/
  GATEWAY_ROUTING__SALT   a secret sticky-routing salt (start-up warns on the shipped default)
"""
GRACEFUL_SHUTDOWN_SECONDS = 30  # SIGTERM: requests in flight get this long (then the spool's grace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway", description="Serve the A/B model gateway.",
        epilog=EPILOG + "\ndefaults (key = default   (its environment variable)):\n" + _defaults(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", str(DEFAULT_CONFIG_PATH)),
                        help="TOML config file (default: %(default)s; env GATEWAY_CONFIG)")
    parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
                        help="address to listen on (default: %(default)s; env GATEWAY_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")),
                        help="port to listen on (default: %(default)s; env GATEWAY_PORT)")
    parser.add_argument("--log-level", default=os.environ.get("GATEWAY_LOG_LEVEL", "info"),
                        help="debug, info, warning or error (default: %(default)s; env GATEWAY_LOG_LEVEL)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("GATEWAY_WORKERS", "1")),
                        help="uvicorn worker processes, metrics summed across them (default: %(default)s; env "
                             "GATEWAY_WORKERS)")
    args = parser.parse_args(argv)
    settings = start_cli(args.config, args.log_level)
    if settings is None:
        return 2

    import uvicorn

    from gateway.http.app import create_app

    if args.workers > 1:
        return _serve_workers(args, settings)

    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal, config_path=args.config)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                            access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, lifespan="on",
                            **_limits(settings))
    server = uvicorn.Server(config)
    server.run()
    if fatal:
        print(f"error: {without_credentials(fatal[0])}", file=sys.stderr)
        return 1
    return 0


def _defaults() -> str:
    from gateway.config.checks import defaults_text
    from gateway.config.settings import Settings

    fields = Settings.model_fields
    return defaults_text({name: f.default_factory() if f.default_factory else f.default  # type: ignore[call-arg]
                          for name, f in fields.items()})


def _serve_workers(args: argparse.Namespace, settings: object) -> int:
    """Several uvicorn workers. Models are loaded once here first, so that a missing model fails
    with one line now, and the workers load from the local cache. Each worker accepts connections
    only once its models are loaded, so uvicorn's replacement of workers (SIGHUP to the parent, or a
    worker that died) never hands a request to a worker that would answer 503."""
    import shutil

    import uvicorn

    from gateway.domain.errors import ModelLoadError
    from gateway.variants.threads import limit_model_threads
    from gateway.wiring.build import model_loader

    limit_model_threads(settings.model.threads)  # type: ignore[attr-defined]  # before the models, and the workers
    loader = model_loader(settings)  # type: ignore[arg-type]
    try:
        for spec in settings.variants:  # type: ignore[attr-defined]
            loader.load(spec)
    except ModelLoadError as exc:
        print(f"error: {without_credentials(str(exc))}", file=sys.stderr)
        return 1
    metrics_dir = settings.spool.dir / f"prometheus-{os.getpid()}"  # type: ignore[attr-defined]
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["GATEWAY_CONFIG"] = str(args.config)
    try:
        uvicorn.run("gateway.http.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level.lower(), access_log=False,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, timeout_worker_healthcheck=120,
                    **_limits(settings))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _limits(settings: object) -> dict[str, object]:
    """uvicorn's own limits: connections (503 past them), keep-alive, and h11's header buffer (used
    only if uvicorn falls back to h11; with httptools the gateway's middleware caps headers)."""
    http = settings.http  # type: ignore[attr-defined]
    return {"limit_concurrency": http.limit_concurrency, "timeout_keep_alive": http.timeout_keep_alive,
            "h11_max_incomplete_event_size": int(http.max_header_kb * 1024)}


if __name__ == "__main__":
    sys.exit(main())

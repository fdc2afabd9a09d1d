"""`fruits serve`: the app's HTTP service (fruits_assets.app.service) on uvicorn."""

from __future__ import annotations

import argparse
import logging

from spark_code.settings import chosen_output_root


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="HTTP API and page that name the fruit in a photo, following the models the platform publishes",
        description="Serve POST /v1/predict, GET /v1/fruits, GET /healthz, GET /metrics, GET / (a page) and the "
        "OpenAPI description (/docs), with the newest published classifier whose evaluation passed.",
    )
    serve.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT or ./fruits-output)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--max-bytes", type=int, help="largest photo accepted in bytes (default 10 MB)")
    serve.add_argument(
        "--poll-seconds", type=float, default=2.0, help="how often to look for a newly published model (default 2)"
    )


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from fruits_assets.app.service import MAX_BYTES, create_app  # the web stack only for this command

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    max_bytes = MAX_BYTES if args.max_bytes is None else args.max_bytes
    app = create_app(chosen_output_root(args.output_root), max_bytes=max_bytes, poll_seconds=args.poll_seconds)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0

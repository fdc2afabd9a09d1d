"""`fruits serve`: the app's HTTP service (fruits_assets.app.service) on uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from spark_code.settings import chosen_output_root

if TYPE_CHECKING:
    import uvicorn

LIMIT_CONCURRENCY = 1024
"""Connections (and requests) uvicorn holds at once before it answers 503 itself: the last bound, above the
service's own queue and byte bounds (which answer JSON with Retry-After first), so that a flood of connections
cannot grow memory either."""


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="HTTP API and page that name the fruit in a photo, following the models the platform publishes",
        description="Serve POST /v1/predict, GET /v1/fruits, POST/GET/DELETE /v1/feedback (with a token), GET "
        "/livez, /readyz and /healthz, GET /metrics, GET / (a page) and the OpenAPI description (/docs), with the "
        "newest published classifier whose evaluation passed.",
    )
    serve.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT or ./fruits-output)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--max-bytes", type=int, help="largest photo accepted in bytes (default 10 MB)")
    serve.add_argument(
        "--poll-seconds", type=float, default=2.0, help="how often to look for a newly published model (default 2)"
    )
    serve.add_argument(
        "--max-queue", type=int, help="photos admitted at once before 503 (default: $FRUITS_SERVE_MAX_QUEUE or 64)"
    )
    serve.add_argument(
        "--max-inflight-bytes",
        type=int,
        help="request body bytes held at once before 503 (default: $FRUITS_SERVE_MAX_INFLIGHT_BYTES or 64 MiB)",
    )
    serve.add_argument(
        "--answer-timeout",
        type=float,
        help="seconds a request waits for the model before 503; a model call longer than this fails liveness "
        "(default: $FRUITS_SERVE_ANSWER_TIMEOUT_S or 60)",
    )
    serve.add_argument(
        "--feedback-root",
        help="where feedback photos are kept, local or s3:// (default: $FRUITS_FEEDBACK_ROOT); feedback is on only "
        "with a token in $FRUITS_FEEDBACK_TOKEN too",
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        help=f"connections uvicorn holds before it answers 503 itself (default: $FRUITS_SERVE_LIMIT_CONCURRENCY or "
        f"{LIMIT_CONCURRENCY})",
    )


def build_server(args: argparse.Namespace) -> uvicorn.Server:
    """The uvicorn server `fruits serve` runs, with every bound set: a function so that tests run the same one."""
    import uvicorn

    from fruits_assets.app.service import MAX_BYTES, create_app, setting  # the web stack only for this command

    max_bytes = MAX_BYTES if args.max_bytes is None else args.max_bytes
    app = create_app(
        chosen_output_root(args.output_root),
        max_bytes=max_bytes,
        poll_seconds=args.poll_seconds,
        max_queue=args.max_queue,
        max_inflight_bytes=args.max_inflight_bytes,
        answer_timeout_s=args.answer_timeout,
        feedback_root=args.feedback_root,
    )
    limit = setting(args.limit_concurrency, "FRUITS_SERVE_LIMIT_CONCURRENCY", LIMIT_CONCURRENCY)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, access_log=False, log_level="info", limit_concurrency=limit
    )
    return uvicorn.Server(config)


def serve_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    build_server(args).run()
    return 0

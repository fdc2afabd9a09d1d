"""The driver's folder operations on S3 ride out a slow endpoint: an answer that takes longer than the AWS SDK's
default 3 s request timeout (a loaded loopback server, a throttled bucket) is waited for, not a failed run."""

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pyarrow.fs as pafs
import pytest

from spark_code.storage import storage

DELAY_S = 3.5
"""Longer than the SDK's default request timeout (3 s), far below the one the driver sets."""


def _slow_proxy(target: str) -> ThreadingHTTPServer:
    """An HTTP proxy to `target` that answers each request DELAY_S seconds late."""

    class Slow(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(DELAY_S)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            request = urllib.request.Request(target + self.path, body or None, headers, method=self.command)
            try:
                with urllib.request.urlopen(request) as answer:
                    status, reply, answer_headers = answer.status, answer.read(), answer.headers
            except urllib.error.HTTPError as error:
                status, reply, answer_headers = error.code, error.read(), error.headers
            self.send_response(status)
            for key, value in answer_headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(key, value)
            length = answer_headers.get("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(reply)))  # HEAD: the object's size
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def slow_s3(aws, monkeypatch):
    boto3.client("s3").create_bucket(Bucket="slow", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    boto3.client("s3").put_object(Bucket="slow", Key="out/_current/label=Kiwi", Body=b"v1")
    proxy = _slow_proxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    yield
    proxy.shutdown()


def test_a_slow_s3_answer_is_waited_for(slow_s3):
    assert storage.list_names("s3://slow/out/_current") == ["label=Kiwi"]


def test_the_sdk_defaults_would_have_failed_there(slow_s3, monkeypatch):
    """The same call with the SDK's default timeouts (one attempt, to be quick) fails: what the settings are for."""
    monkeypatch.setattr(storage, "S3_PATIENCE", {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1)})
    with pytest.raises(OSError):
        storage.list_names("s3://slow/out/_current")

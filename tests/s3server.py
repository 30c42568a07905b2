"""An S3-compatible server (moto's server mode) on 127.0.0.1 for the tests that keep sweeps on S3."""

import contextlib
import logging

import boto3
from moto.server import ThreadedMotoServer


@contextlib.contextmanager
def s3_server(bucket: str = "sweeps"):
    """A running S3 server holding ``bucket``: yields the environment (``AWS_ENDPOINT_URL``, credentials,
    region) that points a process at it, as pyarrow, boto3 and the project read it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # a port it binds itself
    server.start()  # returns once the server is bound
    _, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "tests-only",
        "AWS_SECRET_ACCESS_KEY": "tests-only",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()

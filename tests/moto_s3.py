"""A real S3 API for tests: a moto server on loopback, its clients and buckets."""

import json
import uuid
from contextlib import contextmanager

import boto3
import httpx
from moto.server import ThreadedMotoServer

from tests.servers import free_port

REGION = "us-east-1"


@contextmanager
def moto_server():
    """A moto S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str, key: str = "testing", secret: str = "testing"):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=secret
    )


def new_bucket(endpoint: str, **credentials) -> str:
    """A fresh bucket (one per test: s3fs caches listings per bucket)."""
    name = f"even-sum-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint, **credentials).create_bucket(Bucket=name)
    return name


@contextmanager
def iam_enforced(endpoint: str):
    """Make the server check credentials (moto accepts any unless told so); yields the
    {"key", "secret"} of a user allowed s3:*. Open again afterwards."""
    # reset-auth N: the next N requests pass unchecked, here the 3 that make the user.
    httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"3").raise_for_status()
    try:
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="admin"
        )
        user = f"reader-{uuid.uuid4().hex[:12]}"  # moto's state is one per process, not per server
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        yield {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()

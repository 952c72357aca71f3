"""S3: the one data bucket (``uploads/``, ``reports/``) and a bucket for access logs.

Uploads are job inputs: the job has read them within the result TTL, so a day is
plenty. Reports (timings, Dask performance reports) are for analysis: 90 days. Both
prefixes are what the settings ``SPACETIME_UPLOADS_URL`` and ``SPACETIME_REPORTS_URL``
name, and what the task roles are scoped to (roles.py).
"""

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

UPLOADS = "uploads"
REPORTS = "reports"
UPLOADS_EXPIRE_DAYS = 1
REPORTS_EXPIRE_DAYS = 90
ACCESS_LOGS_EXPIRE_DAYS = 90


class Storage(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        # Server access logs of the data bucket and the load balancer's access logs. SSE-S3:
        # the only encryption ALB log delivery accepts.
        self.logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire", expiration=Duration.days(ACCESS_LOGS_EXPIRE_DAYS))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.logs,
            server_access_logs_prefix="s3/",
            # The web console PUTs a direct upload's parts from the browser, and reads each
            # part's ETag. Any origin: a presigned URL is the permission (it allows one part
            # of one upload, for an hour), and CORS only says which pages may read S3's answer.
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.PUT],
                    allowed_origins=["*"],
                    allowed_headers=["*"],
                    exposed_headers=["ETag"],
                    max_age=3600,
                )
            ],
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="uploads-expire",
                    prefix=f"{UPLOADS}/",
                    expiration=Duration.days(UPLOADS_EXPIRE_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(UPLOADS_EXPIRE_DAYS),
                ),
                s3.LifecycleRule(
                    id="reports-expire",
                    prefix=f"{REPORTS}/",
                    expiration=Duration.days(REPORTS_EXPIRE_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(UPLOADS_EXPIRE_DAYS),
                ),
            ],
            # Reports are worth keeping if the stack goes; an emptied bucket is deleted by hand.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def url(self, prefix: str) -> str:
        """The fsspec URL of a prefix, as the settings take it: ``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket.bucket_name}/{prefix}"

    def objects(self, prefix: str) -> str:
        """The ARN of every object under ``prefix/``: the narrowest resource a task role needs."""
        return self.bucket.arn_for_objects(f"{prefix}/*")

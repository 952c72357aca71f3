"""The task roles: what each service's code may do in AWS, and nothing more.

Every S3 permission names its actions one by one and the objects under one prefix; none
is ``s3:*`` or a whole bucket. Each statement says which code path needs it, so that a
change to that code shows which line here to revisit. (The execution roles, which ECS
itself uses to pull images, write logs and read the Redis secret, are the task
definitions' own.)
"""

from aws_cdk import aws_iam as iam
from constructs import Construct

from spacetime_infra.storage import REPORTS, UPLOADS, Storage

WRITE = ["s3:PutObject", "s3:AbortMultipartUpload"]  # s3fs writes big objects as multipart uploads


class TaskRoles(Construct):
    def __init__(self, scope: Construct, id: str, storage: Storage) -> None:
        super().__init__(scope, id)
        uploads, reports = storage.objects(UPLOADS), storage.objects(REPORTS)

        def role(name: str, description: str) -> iam.Role:
            return iam.Role(
                self, name, assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"), description=description
            )

        def allow(role: iam.Role, sid: str, actions: list[str], resource: str) -> None:
            role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=[resource]))

        self.api = role("Api", "SpaceTime API: writes uploads, serves reports")
        self.dispatchers = role("Dispatchers", "SpaceTime dispatchers: read uploads, write reports")
        self.workers = role("Workers", "SpaceTime Dask workers: read uploads, write reports")
        self.scheduler = role("Scheduler", "SpaceTime Dask scheduler: no AWS access")

        # backend/api/uploads.py save_stream: POST /even-sum streams the body to uploads/. And
        # backend/api/direct_uploads.py: POST /even-sum/uploads creates a multipart upload, signs its
        # part URLs (a presigned PUT acts with the signer's rights) and completes or aborts it.
        allow(self.api, "WriteUploads", WRITE, uploads)
        # backend/api/direct_uploads.py complete: the parts are checked against S3's ListParts.
        allow(self.api, "CheckDirectUploads", ["s3:ListMultipartUploadParts"], uploads)
        # backend/api/uploads.py sweep_partial_uploads: at start, the API lists the multipart uploads
        # (a bucket-level action: it lists keys being uploaded, not objects) to abort stale ones.
        allow(self.api, "SweepPartialUploads", ["s3:ListBucketMultipartUploads"], storage.bucket.bucket_arn)
        # backend/api/uploads.py _abandon: a failed upload is checked (HEAD needs GetObject) and deleted;
        # backend/api/lookup.py finished_output reads a large image's output file (compute/files.py),
        # and Submitter._input a rerun's input file.
        allow(self.api, "DiscardFailedUploads", ["s3:GetObject", "s3:DeleteObject"], uploads)
        # backend/telemetry/reports.py ReportWriter.report: GET /tasks/{token}/report reads the stored page,
        # or renders it from the job's trace and timing record and stores it for the next reader.
        allow(self.api, "ServeReports", ["s3:GetObject", *WRITE], reports)
        for reader in (self.dispatchers, self.workers):
            # compute/even_sum.py: the dispatcher sizes the file, the workers read its blocks.
            # compute/stored.py randomize_file: the workers read a large image's input file,
            # and the dispatcher its first bytes (backend/dispatch/runners.py input_head).
            allow(reader, "ReadUploads", ["s3:GetObject"], uploads)
            # backend/telemetry/reports.py save_timing and capture: timing records and traces.
            allow(reader, "WriteReports", WRITE, reports)
        # backend/core/inputs.py drop_input: an ended job's upload is deleted; and
        # backend/dispatch/dispatcher.py _drop_due_files: image files past their time.
        allow(self.dispatchers, "DropUploads", ["s3:DeleteObject"], uploads)
        # compute/stored.py randomize_file: a large image's output, written as a file.
        allow(self.workers, "WriteImageFiles", WRITE, storage.objects(f"{UPLOADS}/images"))
        for writer in (self.api, self.dispatchers, self.workers):
            # s3fs makedirs (before each write) probes that the bucket exists: HeadBucket needs
            # s3:ListBucket, which would list every key; GetBucketLocation is its second probe.
            allow(writer, "FindBucket", ["s3:GetBucketLocation"], storage.bucket.bucket_arn)

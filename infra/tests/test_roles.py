"""Least privilege: each task role may do exactly what its code needs in S3, by prefix."""

from tests.cfn import construct, resources, target, text

WRITE = ["s3:PutObject", "s3:AbortMultipartUpload"]
READER = {  # dispatchers and workers
    ("ReadUploads", ("s3:GetObject",), "uploads/*"),
    ("WriteReports", tuple(WRITE), "reports/*"),
    ("FindBucket", ("s3:GetBucketLocation",), ""),
}
EXPECTED = {
    "Api": {
        ("WriteUploads", tuple(WRITE), "uploads/*"),
        ("CheckDirectUploads", ("s3:ListMultipartUploadParts",), "uploads/*"),
        ("SweepPartialUploads", ("s3:ListBucketMultipartUploads",), ""),
        ("DiscardFailedUploads", ("s3:GetObject", "s3:DeleteObject"), "uploads/*"),
        ("ServeReports", ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"), "reports/*"),
        ("FindBucket", ("s3:GetBucketLocation",), ""),
    },
    "Dispatchers": READER | {("DropUploads", ("s3:DeleteObject",), "uploads/*")},
    "Workers": READER | {("WriteImageFiles", tuple(WRITE), "uploads/images/*")},
    "Scheduler": set(),
}


def statements_by_role(template: dict) -> dict[str, list[dict]]:
    """{role logical id: every statement of the policies attached to it}."""
    found: dict[str, list[dict]] = {}
    for policy in resources(template, "AWS::IAM::Policy").values():
        for role in policy["Roles"]:
            found.setdefault(target(role), []).extend(policy["PolicyDocument"]["Statement"])
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_task_roles_have_exactly_their_statements(template):
    bucket = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageData"))
    by_role = statements_by_role(template)
    task_roles = {k: construct(k, "Roles") for k in resources(template, "AWS::IAM::Role") if k.startswith("Roles")}
    assert set(task_roles.values()) == set(EXPECTED)
    for role_id, name in task_roles.items():
        seen = set()
        for statement in by_role.get(role_id, []):
            assert statement["Effect"] == "Allow"
            (resource,) = as_list(statement["Resource"])
            path = text(resource).removeprefix(f"<{bucket}>").removeprefix("/")
            seen.add((statement["Sid"], tuple(as_list(statement["Action"])), path))
        assert seen == EXPECTED[name], name


def test_no_s3_wildcard_anywhere(template):
    """No s3:* action, no Resource '*', no whole bucket (bucket/*) in any policy of the stack."""
    for name, statements in statements_by_role(template).items():
        for statement in statements:
            actions = as_list(statement["Action"])
            if not any(a.startswith("s3:") for a in actions):
                continue
            assert all("*" not in a for a in actions), (name, actions)
            for resource in as_list(statement["Resource"]):
                assert resource != "*", name
                assert not text(resource).endswith(">/*"), (name, text(resource))


def test_each_redis_client_reads_its_own_users_password(template):
    """The API and dispatchers read the default user's; the workers only their own user's."""
    secrets = {construct(k, "Cache"): k for k in resources(template, "AWS::SecretsManager::Secret")}
    readers: dict[str, set[str]] = {}
    for role, statements in statements_by_role(template).items():
        for statement in statements:
            if "secretsmanager:GetSecretValue" in as_list(statement["Action"]):
                (resource,) = as_list(statement["Resource"])
                readers.setdefault(target(resource), set()).add(role.split("TaskExecutionRole")[0])
    assert readers == {
        secrets["AuthToken"]: {"ServicesApi", "ServicesDispatchers"},
        secrets["WorkerPassword"]: {"WorkersInteractive", "WorkersBulk"},
    }

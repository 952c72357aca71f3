"""Redis (Multi-AZ, TLS, users with passwords from Secrets Manager), the bucket (private,
encrypted, expiring) and the image repositories' lifecycle."""

import json

from aws_cdk.assertions import Match, Template

from tests.cfn import find, only, resources, target, text


def test_redis_is_multi_az_with_tls_and_a_secret_token(template, env_config):
    (redis,) = resources(template, "AWS::ElastiCache::ReplicationGroup").values()
    assert redis["MultiAZEnabled"] is True
    assert redis["AutomaticFailoverEnabled"] is True
    assert redis["NumCacheClusters"] == 2
    assert redis["TransitEncryptionEnabled"] is True
    assert redis["AtRestEncryptionEnabled"] is True
    assert redis["CacheNodeType"] == env_config["redisNodeType"]
    assert "AuthToken" not in redis  # users instead (RBAC): the same password for the default user
    (group_id, group) = only(resources(template, "AWS::ElastiCache::UserGroup"))
    assert [target(g) for g in redis["UserGroupIds"]] == [group_id]
    users = resources(template, "AWS::ElastiCache::User")
    assert sorted(target(u) for u in group["UserIds"]) == sorted(users)
    secrets = resources(template, "AWS::SecretsManager::Secret")
    for user in users.values():
        # A dynamic reference to a generated secret: the template holds no password.
        (password,) = user["AuthenticationMode"]["Passwords"]
        parts = password["Fn::Join"][1]
        assert parts[0] == "{{resolve:secretsmanager:" and target(parts[1]) in secrets
    assert len({text(u["AuthenticationMode"]["Passwords"][0]) for u in users.values()}) == len(users)
    for secret in secrets.values():
        assert secret["GenerateSecretString"]["ExcludePunctuation"] is True  # safe inside a URL
    Template.from_json(template).has_resource_properties(
        "AWS::ElastiCache::ParameterGroup", {"Properties": {"maxmemory-policy": "noeviction"}}
    )


def test_workers_may_only_read_inputs_and_write_staged_results(template):
    """compute/stored.py: GET input:<token>, SET staged:<token>:... EX. Nothing else: a
    worker decodes hostile PNGs, and must not be able to touch the queue or the records."""
    users = {u["UserName"]: u for u in resources(template, "AWS::ElastiCache::User").values()}
    assert users.pop("default")["AccessString"] == "on ~* &* +@all"
    (worker,) = users.values()
    words = worker["AccessString"].split()
    assert words[0] == "on"
    assert {w for w in words if w.startswith("~")} == {"~input:*", "~staged:*"}
    commands = {"+hget", "+hset", "+expire", "+multi", "+exec"}
    assert {w for w in words if w[0] in "+-"} == {"-@all", *commands}
    assert words.index("-@all") < words.index("+hget")  # ACL rules apply in order
    assert not any(w.startswith(("&", "%", "allkeys", "allcommands", "nopass")) for w in words)


def test_the_bucket_is_private_encrypted_and_expires_its_prefixes(template):
    bucket_id, bucket = next((k, v) for k, v in resources(template, "AWS::S3::Bucket").items() if "Data" in k)
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["Prefix"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert set(rules) == {"uploads/", "reports/"}
    assert rules["uploads/"]["ExpirationInDays"] == 1
    assert rules["reports/"]["ExpirationInDays"] == 90
    assert all(r["Status"] == "Enabled" for r in rules.values())
    assert "LoggingConfiguration" in bucket
    policy = find(resources(template, "AWS::S3::BucketPolicy"), "StorageDataPolicy")
    assert target(policy["Bucket"]) == bucket_id
    Template.from_json(template).has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


def test_no_image_an_environment_runs_is_expired(assembly, cdk_context):
    """Each environment's tags (and the scheduler's) have a rule of their own ahead of the
    catch-all: ECR never lets a lower-priority rule expire an image a higher one matches,
    so staging's commits cannot push out what production runs."""
    images = cdk_context["spacetime:images"]
    prefixes = [f"{env}-" for env in cdk_context["spacetime:environments"]] + ["scheduler-"]
    repositories = resources(assembly.template("SpaceTime-images"), "AWS::ECR::Repository")
    assert len(repositories) == 2
    for repository in repositories.values():
        rules = sorted(json.loads(repository["LifecyclePolicy"]["LifecyclePolicyText"])["rules"], key=priority)
        *kept, catch_all = rules
        assert [r["selection"]["tagPrefixList"] for r in kept] == [[p] for p in prefixes]
        for rule in kept:
            assert rule["selection"]["tagStatus"] == "tagged"
            assert rule["selection"]["countNumber"] == images["keepDeployedImages"] >= 1
        assert catch_all["selection"]["tagStatus"] == "any"
        assert catch_all["selection"]["countNumber"] == images["keepImages"]


def priority(rule: dict) -> int:
    return rule["rulePriority"]

"""Redis (Multi-AZ, TLS, AUTH from Secrets Manager) and the bucket (private, encrypted,
expiring)."""

from aws_cdk.assertions import Match, Template

from tests.cfn import find, resources, target


def test_redis_is_multi_az_with_tls_and_a_secret_token(template, env_config):
    (redis,) = resources(template, "AWS::ElastiCache::ReplicationGroup").values()
    assert redis["MultiAZEnabled"] is True
    assert redis["AutomaticFailoverEnabled"] is True
    assert redis["NumCacheClusters"] == 2
    assert redis["TransitEncryptionEnabled"] is True
    assert redis["AtRestEncryptionEnabled"] is True
    assert redis["CacheNodeType"] == env_config["redisNodeType"]
    # A dynamic reference to the generated secret: the template holds no token.
    secret = next(iter(resources(template, "AWS::SecretsManager::Secret")))
    token = redis["AuthToken"]["Fn::Join"][1]
    assert token[0] == "{{resolve:secretsmanager:" and target(token[1]) == secret
    (secret_props,) = resources(template, "AWS::SecretsManager::Secret").values()
    assert secret_props["GenerateSecretString"]["ExcludePunctuation"] is True  # safe inside a URL
    Template.from_json(template).has_resource_properties(
        "AWS::ElastiCache::ParameterGroup", {"Properties": {"maxmemory-policy": "noeviction"}}
    )


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

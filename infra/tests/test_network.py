"""The network and who may reach what (spacetime_infra/flows.py's table)."""

from aws_cdk.assertions import Match, Template

from tests.cfn import construct, find, resources, target

# (from, to, port): every flow between the stack's security groups, and no other.
FLOWS = {
    ("Alb", "Api", 5000),
    ("Api", "Redis", 6379),
    ("Dispatchers", "Redis", 6379),
    ("Workers", "Redis", 6379),
    ("Dispatchers", "Scheduler", 8786),
    ("Workers", "Scheduler", 8786),
    ("Scheduler", "Workers", 8788),
    ("Scheduler", "Workers", 8790),
    ("Workers", "Workers", 8788),
}


def group_name(value) -> str:
    return construct(target(value), "Flows")


def test_vpc_spans_two_zones_with_an_s3_gateway(template, env_config):
    subnets = resources(template, "AWS::EC2::Subnet")
    assert {s["AvailabilityZone"] for s in subnets.values()} == set(env_config["availabilityZones"])
    assert len(subnets) == 6  # public, private, data: one of each per zone
    Template.from_json(template).has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Gateway", "ServiceName": Match.object_like({"Fn::Join": Match.any_value()})},
    )
    (endpoint,) = resources(template, "AWS::EC2::VPCEndpoint").values()
    assert "s3" in str(endpoint["ServiceName"])
    # Every private and data route table sends S3 through the endpoint, not the NAT gateway.
    tables = {target(t) for t in endpoint["RouteTableIds"]}
    inner = {k for k in resources(template, "AWS::EC2::RouteTable") if "private" in k or "data" in k}
    assert len(inner) == 4 and inner <= tables


def test_the_only_flows_are_the_documented_ones(template):
    seen = set()
    for rule in resources(template, "AWS::EC2::SecurityGroupIngress").values():
        assert rule["FromPort"] == rule["ToPort"], "a port range"
        seen.add((group_name(rule["SourceSecurityGroupId"]), group_name(rule["GroupId"]), rule["FromPort"]))
    assert seen == FLOWS


def test_egress_matches_the_flows_plus_https_out(template):
    """Groups do not allow all outbound: each egress is a flow above or HTTPS to AWS APIs."""
    groups = resources(template, "AWS::EC2::SecurityGroup")
    for name, group in groups.items():
        for rule in group.get("SecurityGroupEgress", []):
            if construct(name, "Flows") == "Redis":
                assert rule["CidrIp"] == "255.255.255.255/32", "Redis should send nothing"  # the CDK's 'no egress'
            else:
                assert (rule["CidrIp"], rule["FromPort"], rule["ToPort"]) == ("0.0.0.0/0", 443, 443)
    for rule in resources(template, "AWS::EC2::SecurityGroupEgress").values():
        flow = (group_name(rule["GroupId"]), group_name(rule["DestinationSecurityGroupId"]), rule["FromPort"])
        assert flow in FLOWS


def test_no_public_ingress_but_the_load_balancers_443(template):
    public = []
    for name, group in resources(template, "AWS::EC2::SecurityGroup").items():
        public += [(construct(name, "Flows"), r) for r in group.get("SecurityGroupIngress", [])]
    for rule in resources(template, "AWS::EC2::SecurityGroupIngress").values():
        if "CidrIp" in rule or "CidrIpv6" in rule:
            public.append((group_name(rule["GroupId"]), rule))
    assert len(public) == 1
    name, rule = public[0]
    assert (name, rule["CidrIp"], rule["FromPort"], rule["ToPort"]) == ("Alb", "0.0.0.0/0", 443, 443)


def test_the_load_balancer_listens_on_443_only_with_the_certificate(template, env_config):
    (listener,) = resources(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["Certificates"] == [{"CertificateArn": env_config["certificateArn"]}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    (balancer,) = resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert balancer["Scheme"] == "internet-facing"
    assert all("public" in target(s) for s in balancer["Subnets"])


def test_no_dashboard_is_published(template):
    """Neither a listener nor a rule reaches the scheduler's dashboard port."""
    assert all(r["FromPort"] != 8787 for r in resources(template, "AWS::EC2::SecurityGroupIngress").values())
    for group in resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
        assert group["Port"] == 5000


def test_every_task_runs_in_private_subnets_without_a_public_ip(template):
    services = resources(template, "AWS::ECS::Service")
    assert len(services) == 4
    for name, service in services.items():
        network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED", name
        assert all("private" in target(s) for s in network["Subnets"]), name
    for group in resources(template, "AWS::AutoScaling::AutoScalingGroup").values():
        assert all("private" in target(s) for s in group["VPCZoneIdentifier"])
    subnet_group = find(resources(template, "AWS::ElastiCache::SubnetGroup"), "Cache")
    assert all("data" in target(s) for s in subnet_group["SubnetIds"])

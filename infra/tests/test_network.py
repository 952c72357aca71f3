"""The network and who may reach what (spacetime_infra/flows.py's table)."""

from tests.cfn import construct, find, resources, target

# Everything that may call AWS's APIs through the interface endpoints.
CALLERS = ("Api", "Dispatchers", "Scheduler", "Workers", "WorkerHosts")
# The interface endpoints, by the service's last name part, and nothing else.
ENDPOINT_SERVICES = {"ecr.api", "ecr.dkr", "logs", "secretsmanager", "ecs", "ecs-agent", "ecs-telemetry", "sts"}

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
    ("Dispatchers", "Workers", 8788),  # a bulk job's profile, asked of each worker
    *((caller, "Endpoints", 443) for caller in CALLERS),
}


def group_name(value) -> str:
    return construct(target(value), "Flows")


def test_vpc_spans_two_zones_with_an_s3_gateway(template, env_config):
    subnets = resources(template, "AWS::EC2::Subnet")
    assert {s["AvailabilityZone"] for s in subnets.values()} == set(env_config["availabilityZones"])
    assert len(subnets) == 6  # public, private, data: one of each per zone
    gateways = [e for e in resources(template, "AWS::EC2::VPCEndpoint").values() if e["VpcEndpointType"] == "Gateway"]
    (endpoint,) = gateways
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


def test_egress_is_the_flows_and_s3_only(template, env_config):
    """No group sends to 0.0.0.0/0: each egress is a flow above (the endpoints among them)
    or HTTPS to the region's S3 prefix list (its gateway endpoint)."""
    for name, group in resources(template, "AWS::EC2::SecurityGroup").items():
        for rule in group.get("SecurityGroupEgress", []):
            assert rule["CidrIp"] == "255.255.255.255/32", name  # the CDK's 'no egress' placeholder
    to_s3 = set()
    for rule in resources(template, "AWS::EC2::SecurityGroupEgress").values():
        assert "CidrIp" not in rule and "CidrIpv6" not in rule
        if "DestinationPrefixListId" in rule:
            assert (rule["DestinationPrefixListId"], rule["FromPort"], rule["ToPort"]) == (
                env_config["s3PrefixListId"],
                443,
                443,
            )
            to_s3.add(group_name(rule["GroupId"]))
        else:
            flow = (group_name(rule["GroupId"]), group_name(rule["DestinationSecurityGroupId"]), rule["FromPort"])
            assert flow in FLOWS
    assert to_s3 == set(CALLERS)


def test_no_route_out_but_the_load_balancers(template):
    """No NAT gateway; the only default route is the public subnets' to the internet gateway."""
    assert not resources(template, "AWS::EC2::NatGateway")
    for name, route in resources(template, "AWS::EC2::Route").items():
        assert "public" in target(route["RouteTableId"]), name
        assert "GatewayId" in route and "NatGatewayId" not in route, name


def test_aws_apis_are_reached_through_interface_endpoints(template):
    interface = [
        e for e in resources(template, "AWS::EC2::VPCEndpoint").values() if e["VpcEndpointType"] == "Interface"
    ]
    assert {e["ServiceName"].removeprefix("com.amazonaws.us-east-1.") for e in interface} == ENDPOINT_SERVICES
    for endpoint in interface:
        assert endpoint["PrivateDnsEnabled"] is True
        assert all("private" in target(s) for s in endpoint["SubnetIds"])
        assert [group_name(g) for g in endpoint["SecurityGroupIds"]] == ["Endpoints"]


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


def test_the_load_balancer_does_not_serve_metrics(template):
    """/metrics names every client: the listener answers 404 itself, ahead of any forward."""
    (rule,) = resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    (condition,) = rule["Conditions"]
    assert condition["Field"] == "path-pattern"
    assert "/metrics*" in condition["PathPatternConfig"]["Values"]
    (action,) = rule["Actions"]
    assert action["Type"] == "fixed-response" and action["FixedResponseConfig"]["StatusCode"] == "404"
    (listener,) = resources(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert all(a["Type"] == "forward" for a in listener["DefaultActions"])  # everything else goes to the API


def test_no_dashboard_is_published(template):
    """Neither a listener nor a rule reaches the scheduler's dashboard port."""
    assert all(r["FromPort"] != 8787 for r in resources(template, "AWS::EC2::SecurityGroupIngress").values())
    for group in resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
        assert group["Port"] == 5000


def test_every_task_runs_in_private_subnets_without_a_public_ip(template):
    services = resources(template, "AWS::ECS::Service")
    assert len(services) == 5  # api, dispatchers, scheduler, two worker pools
    for name, service in services.items():
        network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED", name
        assert all("private" in target(s) for s in network["Subnets"]), name
    for group in resources(template, "AWS::AutoScaling::AutoScalingGroup").values():
        assert all("private" in target(s) for s in group["VPCZoneIdentifier"])
    subnet_group = find(resources(template, "AWS::ElastiCache::SubnetGroup"), "Cache")
    assert all("data" in target(s) for s in subnet_group["SubnetIds"])

"""CloudWatch log groups, all with the environment's retention."""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

# CloudWatch Logs accepts only these periods; jsii names them rather than counting days.
RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
}


def log_group(scope: Construct, id: str, retention_days: int) -> logs.LogGroup:
    # DESTROY: logs past their retention are worthless, and a retained group would block
    # redeploying the stack under the same name.
    return logs.LogGroup(scope, id, retention=RETENTION[retention_days], removal_policy=RemovalPolicy.DESTROY)

"""The CDK app: ``python app.py`` synthesizes every stack into cdk.out/, offline.

No AWS account, no network, no Docker: the images are pulled from ECR by tag at deploy
time, the Availability Zones are named in cdk.json, nothing is looked up. cdk-nag's
AwsSolutions rules run as a validation plugin during synthesis: a finding that is not
acknowledged (spacetime_infra/nag.py, each with its reason) fails it.

The ``cdk`` command line runs this same file to deploy (docs/deployment-aws.md).
"""

import json
import os
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from spacetime_infra.config import ENVIRONMENTS_KEY, IMAGE_TAG_KEY, IMAGES_KEY, load_environments, load_images
from spacetime_infra.images import ImagesStack
from spacetime_infra.stack import SpaceTimeStack

HERE = Path(__file__).resolve().parent
IMAGES_STACK = "SpaceTime-images"


def build_app(context: dict | None = None, outdir: str | None = None) -> cdk.App:
    """The app with cdk.json's context, then ``context`` over it (the cdk CLI's -c values
    arrive through CDK_CONTEXT_JSON, which cdk.App reads itself)."""
    defaults = json.loads((HERE / "cdk.json").read_text())["context"]
    app = cdk.App(
        context=defaults | (context or {}),
        outdir=outdir or os.environ.get("CDK_OUTDIR") or str(HERE / "cdk.out"),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))

    merged = {key: app.node.try_get_context(key) for key in (ENVIRONMENTS_KEY, IMAGES_KEY, IMAGE_TAG_KEY)}
    images = load_images(merged)
    # The account: the cdk CLI sets CDK_DEFAULT_ACCOUNT from the deploying credentials;
    # offline it stays a CloudFormation pseudo parameter.
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    environments = load_environments(merged)
    ImagesStack(
        app,
        IMAGES_STACK,
        images,
        [config.name for config in environments],
        env=cdk.Environment(account=account, region=images.region),
    )
    for config in environments:
        SpaceTimeStack(app, config, images, env=cdk.Environment(account=account, region=config.region))
    return app


if __name__ == "__main__":
    build_app().synth()

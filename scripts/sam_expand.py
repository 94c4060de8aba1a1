#!/usr/bin/env python3
"""Expand a SAM template into plain CloudFormation with the real SAM translator (the
`aws-sam-translator` package that `sam validate` uses), offline.

    python scripts/sam_expand.py template.yaml [--parameters FILE] [--stack-name NAME]

Prints the expanded template as JSON on stdout. Local `CodeUri`s become placeholder S3 locations
(the translator only accepts S3 there; nothing is uploaded) and a local `DefinitionUri` is inlined
as `Definition`, so the state machine stays exactly the file in the repository. Parameters come
from FILE, in samconfig.toml's `parameter_overrides` syntax (`Key=Value Key2="a b"`) or one
`Key=Value` per line; `#` starts a comment.
"""

import argparse
import json
import os
import shlex
import sys

from samtranslator.translator.transform import transform
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicies(ManagedPolicyLoader):
    """Managed policies by name without calling IAM: the translator only needs name -> ARN."""

    NAMES = [
        "AWSLambdaBasicExecutionRole",
        "AWSXRayDaemonWriteAccess",
        "AWSXrayWriteOnlyAccess",
        "AWSLambdaRole",
    ]

    def __init__(self):  # noqa: D107 - no IAM client: nothing leaves this machine
        self._policy_map = None

    def load(self):
        return {n: f"arn:aws:iam::aws:policy/service-role/{n}" if n == "AWSLambdaBasicExecutionRole"
                else f"arn:aws:iam::aws:policy/{n}" for n in self.NAMES}


def parse_parameters(text):
    params = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        for token in shlex.split(line):
            if "=" not in token:
                raise SystemExit(f"sam_expand: parameter {token!r} is not Key=Value")
            key, value = token.split("=", 1)
            params[key] = value
    return params


def localise(template, base_dir):
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
            # `sam build` builds the image and sets ImageUri; a placeholder stands in for it.
            tag = (resource.get("Metadata") or {}).get("DockerTag", "latest")
            props.setdefault("ImageUri", f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{logical_id.lower()}:{tag}")
            resource["Properties"] = props
        elif kind == "AWS::Serverless::Function":
            uri = props.get("CodeUri", (template.get("Globals", {}).get("Function") or {}).get("CodeUri"))
            if uri is None or isinstance(uri, str) and not uri.startswith("s3://"):
                props["CodeUri"] = f"s3://selfheal-local-artifacts/{logical_id}.zip"
                resource["Properties"] = props
        elif kind == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str) \
                and not props["DefinitionUri"].startswith("s3://"):
            path = os.path.join(base_dir, props.pop("DefinitionUri"))
            with open(path, encoding="utf-8") as f:
                props["Definition"] = json.load(f)
    # A Globals CodeUri that is local would be merged back in over ours.
    fn_globals = template.get("Globals", {}).get("Function") or {}
    if isinstance(fn_globals.get("CodeUri"), str) and not fn_globals["CodeUri"].startswith("s3://"):
        del fn_globals["CodeUri"]
    return template


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("template")
    ap.add_argument("--parameters", help="parameter overrides file (Key=Value ...)")
    ap.add_argument("--stack-name", default="selfheal")
    args = ap.parse_args()
    # The translator asks boto3 for the region of its pseudo parameters; no credentials needed.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(args.template, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    params = {}
    if args.parameters:
        with open(args.parameters, encoding="utf-8") as f:
            params = parse_parameters(f.read())
    declared = template.get("Parameters", {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise SystemExit(f"sam_expand: unknown parameters {', '.join(unknown)}")
    template = localise(template, os.path.dirname(os.path.abspath(args.template)))
    values = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
              "AWS::StackName": args.stack_name, "AWS::URLSuffix": "amazonaws.com"}
    values.update(params)
    expanded = transform(template, values, OfflinePolicies())
    # Record the resolved parameter values next to the template for the stack's own resolver.
    expanded.setdefault("Metadata", {})["SelfhealParameterValues"] = params
    json.dump(expanded, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

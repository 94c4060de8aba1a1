#!/usr/bin/env python3
"""moto_server with resource-level IAM for DynamoDB and Secrets Manager.

moto 5 checks IAM policies against the resource "*" for these services, so a statement scoped
to a table or secret ARN (what SAM's policy templates produce) never matches and every call is
denied. This launcher teaches moto's request handlers which ARN a call acts on, then runs the
unmodified moto server: signatures, policy evaluation and the APIs stay moto's own.

    python scripts/moto_iam.py -H 127.0.0.1 -p PORT
"""

import json

from moto.dynamodb.responses import DynamoHandler
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.server import main


def _body(handler):
    # DynamoDB's handler replaces the raw body with its parsed parameters before the check.
    if isinstance(handler.body, dict):
        return handler.body
    try:
        return json.loads(handler.body or "{}")
    except (TypeError, ValueError):
        return {}


def _table_arn(self):
    body = _body(self)
    name = body.get("TableName")
    if not name:
        for key in ("RequestItems", "TransactItems"):
            items = body.get(key)
            if isinstance(items, dict) and items:
                name = next(iter(items))
            elif isinstance(items, list) and items:
                first = next(iter(items[0].values()), {})
                name = first.get("TableName")
            if name:
                break
    if not name:
        return "*"
    if str(name).startswith("arn:"):
        return name
    return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{name}"


def _secret_arn(self):
    secret_id = _body(self).get("SecretId")
    if not secret_id:
        return "*"
    try:
        return self.backend.describe_secret(secret_id=secret_id).arn
    except Exception:  # an unknown secret: let the API answer ResourceNotFound after the check
        if str(secret_id).startswith("arn:"):
            return secret_id
        return f"arn:aws:secretsmanager:{self.region}:{self.current_account}:secret:{secret_id}"


DynamoHandler._determine_resource = _table_arn
SecretsManagerResponse._determine_resource = _secret_arn

if __name__ == "__main__":
    main()

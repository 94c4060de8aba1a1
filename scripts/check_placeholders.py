"""Cross-check the state machine's ${Placeholder} references against template.yaml's
DefinitionSubstitutions: every placeholder must be substituted and every substitution used,
and the ASL must not contain hard-coded ARNs other than service integration resources."""
import json
import re
import sys

from samcli.yamlhelper import yaml_parse

template = yaml_parse(open("template.yaml").read())
problems = []
for name, res in template["Resources"].items():
    if res.get("Type") != "AWS::Serverless::StateMachine":
        continue
    props = res["Properties"]
    asl_path = props["DefinitionUri"]
    text = open(asl_path).read()
    json.loads(text)  # must be plain JSON before substitution
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    declared = set(props.get("DefinitionSubstitutions", {}))
    for missing in sorted(used - declared):
        problems.append(f"{asl_path}: ${{{missing}}} has no DefinitionSubstitution in {name}")
    for unused in sorted(declared - used):
        problems.append(f"{name}: DefinitionSubstitution {unused} is not used by {asl_path}")
    for arn in re.findall(r'"(arn:aws[^"]*)"', text):
        if not arn.startswith("arn:aws:states:::"):
            problems.append(f"{asl_path}: hard-coded ARN {arn}")
    print(f"{name}: {len(used)} placeholders, {len(declared)} substitutions")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)

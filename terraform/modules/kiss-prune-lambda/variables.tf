variable "name" {
  type        = string
  default     = "kiss-prune"
  description = "Name of the function, its log group, roles and schedule."

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,54}$", var.name))
    error_message = "name must be 1-54 letters, digits, - or _ (it prefixes the role names)."
  }
}

variable "store_url" {
  type        = string
  description = "The cache to prune: the kiss-cache-s3 module's store_url (s3://BUCKET?region=REGION)."

  validation {
    condition     = startswith(var.store_url, "s3://")
    error_message = "store_url must be an s3:// store URL."
  }
}

variable "pruner_policy_arn" {
  type        = string
  description = "ARN of the pruner IAM policy (the kiss-cache-s3 module's policy_arns[\"pruner\"]); the function's role gets it and nothing else on the bucket."
}

variable "package_zip" {
  type        = string
  description = "Path of the deployment package: a zip holding the kiss-lambda binary named bootstrap, built for architecture (docs/terraform.md shows how)."
}

variable "architecture" {
  type        = string
  default     = "arm64"
  description = "Instruction set of the function and of the package: arm64 or x86_64."

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "memory_size" {
  type        = number
  default     = 1024
  description = "Memory of the function in MB. CPU and network grow with it (1769 MB is one full vCPU); the prune's heap is about 25 bytes per path, and what is left caches its temporary files."

  validation {
    condition     = var.memory_size >= 256 && var.memory_size <= 10240
    error_message = "memory_size must be 256-10240 MB."
  }
}

variable "ephemeral_storage" {
  type        = number
  default     = 2048
  description = "Size of the function's /tmp in MB (512-10240): the prune keeps its listing, walk and deletions in temporary files there, about 100 bytes per object in the bucket."

  validation {
    condition     = var.ephemeral_storage >= 512 && var.ephemeral_storage <= 10240
    error_message = "ephemeral_storage must be 512-10240 MB."
  }
}

variable "timeout" {
  type        = number
  default     = 900
  description = "Seconds a run may take (Lambda allows at most 900). The prune stops 30 s before, releases its lease and reports."

  validation {
    condition     = var.timeout >= 60 && var.timeout <= 900
    error_message = "timeout must be 60-900 seconds."
  }
}

variable "schedule" {
  type        = string
  default     = "cron(17 3 * * ? *)"
  description = "EventBridge Scheduler expression of the runs: cron(...), rate(...) or at(...)."
}

variable "schedule_timezone" {
  type        = string
  default     = "UTC"
  description = "Time zone the schedule is read in."
}

variable "grace" {
  type        = string
  default     = null
  description = "kiss prune --grace (a Go duration, e.g. 2h): nothing younger is deleted. null: kiss prune's default (2h)."
}

variable "root_max_age" {
  type        = string
  default     = null
  description = "kiss prune --root-max-age (e.g. 30d): markers older than this stop counting and are deleted. null: markers never expire."
}

variable "extra_roots" {
  type        = list(string)
  default     = []
  description = "kiss prune --roots: extra root prefixes in the bucket (e.g. releases/)."
}

variable "lock_ttl" {
  type        = string
  default     = "5m"
  description = "TTL of the prune lease. A run stopped by its timeout leaves its lease behind, and writers wait for it, at most this long."
}

variable "lock_wait" {
  type        = string
  default     = "2m"
  description = "How long a run waits for another prune's lease before failing (errorType KissPruneLocked)."
}

variable "dry_run" {
  type        = bool
  default     = false
  description = "Plan only: the runs report what they would delete and delete nothing (a first week's trial)."
}

variable "log_retention_days" {
  type        = number
  default     = 30
  description = "Days the function's logs (one JSON report per run) are kept."
}

variable "alarm_actions" {
  type        = list(string)
  default     = []
  description = "SNS topic ARNs told when a run fails or when no run happened for alarm_no_run_days. Empty: no alarms."
}

variable "alarm_no_run_days" {
  type        = number
  default     = 2
  description = "With alarm_actions: days without any run after which the not-run alarm fires (more than the schedule's interval)."

  validation {
    condition     = var.alarm_no_run_days >= 1 && floor(var.alarm_no_run_days) == var.alarm_no_run_days
    error_message = "alarm_no_run_days must be a whole number >= 1."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource that takes them."
}

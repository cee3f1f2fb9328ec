variable "region" {
  type        = string
  default     = "eu-central-1"
  description = "AWS region of the bucket."
}

variable "bucket_name" {
  type        = string
  description = "Globally unique bucket name."
}

variable "ci_role_arns" {
  type        = list(string)
  default     = []
  description = "Principals that push to the cache (the writer role)."
}

variable "pruner_role_arns" {
  type        = list(string)
  default     = []
  description = "Principals that run kiss prune (the pruner role)."
}

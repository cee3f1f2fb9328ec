variable "region" {
  type        = string
  default     = "eu-central-1"
  description = "AWS region of the bucket and of the prune function."
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

variable "package_zip" {
  type        = string
  description = "The kiss-lambda deployment package (a zip with the arm64 binary named bootstrap)."
}

variable "alarm_topic_arns" {
  type        = list(string)
  default     = []
  description = "SNS topics told when a prune fails or does not run."
}

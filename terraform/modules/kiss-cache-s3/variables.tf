variable "bucket_name" {
  type        = string
  description = "Name of the S3 bucket holding the cache (narinfo, nar/, gcroots/)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "force_destroy" {
  type        = bool
  default     = false
  description = "Allow `destroy` to delete a non-empty bucket (every object and version). Keep false in production."
}

variable "undelete_days" {
  type        = number
  default     = 7
  description = "Days a deleted or overwritten object stays recoverable as a noncurrent version (the undelete window after a bad prune). 0 disables versioning clean-up, keeping old versions forever."

  validation {
    condition     = var.undelete_days >= 0 && floor(var.undelete_days) == var.undelete_days
    error_message = "undelete_days must be a whole number >= 0."
  }
}

variable "abort_incomplete_multipart_days" {
  type        = number
  default     = 1
  description = "Days after which unfinished multipart uploads (crashed NAR pushes) are aborted and their parts freed."

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number >= 1."
  }
}

variable "public_read" {
  type        = bool
  default     = false
  description = "Let anyone GET nix-cache-info, *.narinfo and nar/* over HTTPS (a public substituter). gcroots/, logs and everything else stay private."
}

variable "require_conditional_lock_writes" {
  type        = bool
  default     = true
  description = "Deny PutObject under gcroots/.lock/ unless it carries If-None-Match or If-Match (s3:if-none-match / s3:if-match condition keys), so no client can overwrite a lease blindly."
}

variable "writer_principals" {
  type        = list(string)
  default     = []
  description = "IAM principal ARNs allowed to assume the writer role (push NARs and narinfos, write markers and their own leases). Empty: no writer role is created; attach writer_policy_arn yourself."
}

variable "pruner_principals" {
  type        = list(string)
  default     = []
  description = "IAM principal ARNs allowed to assume the pruner role (list, read and delete everything). Empty: no pruner role."
}

variable "reader_principals" {
  type        = list(string)
  default     = []
  description = "IAM principal ARNs allowed to assume the reader role (read-only, e.g. kiss serve in front of a private bucket). Empty: no reader role."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource that takes them."
}

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
  description = "Let anyone GET nix-cache-info, *.narinfo and nar/* from the bucket's own HTTPS endpoint (a public substituter without a CDN). gcroots/, logs and everything else stay private."
}

variable "require_conditional_lock_writes" {
  type        = bool
  default     = true
  description = "Deny PutObject under gcroots/.lock/ unless it carries If-None-Match or If-Match (s3:if-none-match / s3:if-match condition keys), so no client can overwrite a lease blindly."
}

variable "writer_principals" {
  type        = list(string)
  default     = []
  description = "IAM principal ARNs allowed to assume the writer role (push NARs and narinfos, write markers and their own leases). Empty: no writer role is created; attach policy_arns[\"writer\"] yourself."
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

variable "store_dir" {
  type        = string
  default     = "/nix/store"
  description = "Nix store directory the cache holds paths of (StoreDir in nix-cache-info)."
}

variable "priority" {
  type        = number
  default     = 30
  description = "Substituter priority in nix-cache-info (lower is tried first; cache.nixos.org is 40)."
}

variable "cdn" {
  type = object({
    price_class         = optional(string, "PriceClass_100")
    aliases             = optional(list(string), [])
    acm_certificate_arn = optional(string)
    nar_ttl             = optional(number, 31536000)
    narinfo_ttl         = optional(number, 3600)
    cache_info_ttl      = optional(number, 300)
    negative_ttl        = optional(number, 60)
  })
  default     = null
  description = <<-EOT
    A CloudFront front for readers (null: none). The bucket stays private; CloudFront reads it through origin access control and serves only nar/*, *.narinfo and nix-cache-info.
    TTLs in seconds: nar_ttl for NARs (immutable), narinfo_ttl for narinfos (how long a pruned path may still be offered at the edge), cache_info_ttl for nix-cache-info, negative_ttl for not-found answers (how long a newly pushed path may stay invisible).
    aliases need acm_certificate_arn (a certificate in us-east-1).
  EOT

  validation {
    condition     = var.cdn == null || try(length(var.cdn.aliases) == 0 || var.cdn.acm_certificate_arn != null, false)
    error_message = "cdn.aliases need cdn.acm_certificate_arn (an ACM certificate in us-east-1 covering them)."
  }

  validation {
    condition     = var.cdn == null || try(var.cdn.narinfo_ttl <= var.cdn.nar_ttl && var.cdn.narinfo_ttl >= 0 && var.cdn.negative_ttl >= 0 && var.cdn.cache_info_ttl >= 0, false)
    error_message = "cdn TTLs must be >= 0, and narinfo_ttl <= nar_ttl (a cached narinfo must not outlive its NAR at the edge)."
  }

  validation {
    condition     = var.cdn == null || try(contains(["PriceClass_All", "PriceClass_200", "PriceClass_100"], var.cdn.price_class), false)
    error_message = "cdn.price_class must be PriceClass_All, PriceClass_200 or PriceClass_100."
  }
}

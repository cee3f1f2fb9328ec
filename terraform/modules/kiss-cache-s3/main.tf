# An S3 bucket laid out as a Nix binary cache for kiss: versioned with a
# bounded undelete window, crashed multipart uploads cleaned up, optional
# public read limited to what substituters fetch, and lease objects that
# can only be written conditionally.

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = !var.public_read
  restrict_public_buckets = !var.public_read
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Versioning turns a prune's deletes into delete markers: what a buggy or
# misconfigured prune removed can be restored for undelete_days.
resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  dynamic "rule" {
    for_each = var.undelete_days > 0 ? [var.undelete_days] : []
    content {
      id     = "undelete-window"
      status = "Enabled"

      filter {}

      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }

      # Drop delete markers once no version is left behind them.
      expiration {
        expired_object_delete_marker = true
      }
    }
  }

  # Lifecycle rules apply to versions, so versioning must exist first.
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  # Built from the name rather than read from the bucket, so that every
  # policy document is known (and shown) at plan time: S3 bucket ARNs hold
  # neither region nor account.
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  # What a Nix substituter fetches; nothing else is ever public or served
  # by the CDN (never gcroots/, .kiss/, log/).
  public_object_arns = [
    "${local.bucket_arn}/nix-cache-info",
    "${local.bucket_arn}/*.narinfo",
    "${local.bucket_arn}/nar/*",
  ]
}

# The cache's identity, written once here: no kiss role may write it (Nix
# writes one into an empty cache on its first push, so it must exist first).
resource "aws_s3_object" "nix_cache_info" {
  bucket        = aws_s3_bucket.this.id
  key           = "nix-cache-info"
  content       = "StoreDir: ${var.store_dir}\nWantMassQuery: 1\nPriority: ${var.priority}\n"
  content_type  = "text/x-nix-cache-info"
  cache_control = "public, max-age=300"
  tags          = var.tags
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # Both Null conditions must hold for the Deny to apply: a PUT with neither
  # If-None-Match nor If-Match. Conditional creates and compare-and-swap
  # refreshes pass; a blind overwrite of a lease does not.
  dynamic "statement" {
    for_each = var.require_conditional_lock_writes ? [1] : []
    content {
      sid       = "DenyUnconditionalLeaseWrites"
      effect    = "Deny"
      actions   = ["s3:PutObject"]
      resources = ["${local.bucket_arn}/gcroots/.lock/*"]

      principals {
        type        = "*"
        identifiers = ["*"]
      }

      condition {
        test     = "Null"
        variable = "s3:if-none-match"
        values   = ["true"]
      }

      condition {
        test     = "Null"
        variable = "s3:if-match"
        values   = ["true"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.public_read ? [1] : []
    content {
      sid       = "PublicReadForSubstituters"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = local.public_object_arns

      principals {
        type        = "*"
        identifiers = ["*"]
      }
    }
  }
}

# The CDN reads through origin access control, signed as CloudFront for
# this distribution only, and only what a substituter fetches. Listing lets
# S3 answer a missing narinfo with 404 (cached for cdn.negative_ttl) rather
# than 403; the distribution never forwards a listing request. Whatever the
# patterns match (*.narinfo also matches gcroots/x.narinfo), CloudFront never
# reads roots, leases or kiss's own objects. Written as HCL rather than in
# the document above, whose read would wait for the distribution's ARN.
locals {
  cloudfront_source = local.cdn_enabled ? { StringEquals = { "AWS:SourceArn" = aws_cloudfront_distribution.this[0].arn } } : null
  cdn_statements = [for s in [
    {
      Sid       = "CloudFrontReadsCacheObjects"
      Effect    = "Allow"
      Principal = { Service = "cloudfront.amazonaws.com" }
      Action    = "s3:GetObject"
      Resource  = local.public_object_arns
      Condition = local.cloudfront_source
    },
    {
      Sid       = "CloudFrontListsForNotFound"
      Effect    = "Allow"
      Principal = { Service = "cloudfront.amazonaws.com" }
      Action    = "s3:ListBucket"
      Resource  = local.bucket_arn
      Condition = local.cloudfront_source
    },
    {
      Sid       = "CloudFrontNeverReadsRootsOrKiss"
      Effect    = "Deny"
      Principal = { Service = "cloudfront.amazonaws.com" }
      Action    = "s3:GetObject"
      Resource  = ["${local.bucket_arn}/gcroots/*", "${local.bucket_arn}/.kiss/*"]
    },
  ] : s if local.cdn_enabled]
  bucket_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat(jsondecode(data.aws_iam_policy_document.bucket.json).Statement, local.cdn_statements)
  })
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = local.bucket_policy

  # A public policy is refused while the public access block still blocks it.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

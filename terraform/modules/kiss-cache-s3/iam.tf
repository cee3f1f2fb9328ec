# One policy per role of the kiss protocol. Writers push and register roots
# but cannot delete cache objects; only the pruner deletes; readers read.
# Each role is exercised against a real S3 server that enforces these very
# documents (terraform/minio_test.go), and every forbidden action below is
# asserted to be refused there.

locals {
  # What writers upload: every kind of cache object Nix pushes, plus
  # markers and their own leases under gcroots/.
  writer_upload_arns = [
    "${local.bucket_arn}/nar/*",
    "${local.bucket_arn}/*.narinfo",
    "${local.bucket_arn}/*.ls",
    "${local.bucket_arn}/log/*",
    "${local.bucket_arn}/realisations/*",
    "${local.bucket_arn}/build-trace-v2/*",
    "${local.bucket_arn}/debuginfo/*",
    "${local.bucket_arn}/gcroots/*",
  ]
  # Never written or deleted by a writer, whatever the patterns above
  # match (*.narinfo also matches .kiss/x.narinfo): the pruner's memo and
  # probes, the cache's identity, and the prune lease.
  writer_denied_arns = [
    "${local.bucket_arn}/.kiss/*",
    "${local.bucket_arn}/nix-cache-info",
    "${local.bucket_arn}/gcroots/.lock/prune",
  ]
}

data "aws_iam_policy_document" "reader" {
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  # Without s3:ListBucket, S3 answers a GET or HEAD of a missing key with
  # 403 instead of 404, and "not in the cache" becomes "access denied".
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
}

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  statement {
    sid       = "UploadCacheObjectsMarkersLeases"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = local.writer_upload_arns
  }

  # Removing a marker (kiss roots rm) and releasing its own lease.
  statement {
    sid       = "DeleteMarkersAndLeases"
    actions   = ["s3:DeleteObject"]
    resources = ["${local.bucket_arn}/gcroots/*"]
  }

  # Unconditional: a prefix-conditioned ListBucket does not count when S3
  # decides between 404 and 403 for a missing key, and every push starts by
  # asking whether its paths exist (HEAD <hash>.narinfo, GET the prune lease).
  # Listing reveals nothing a writer cannot already read.
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }

  statement {
    sid       = "NeverPrunerObjects"
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = local.writer_denied_arns
  }
}

data "aws_iam_policy_document" "pruner" {
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  # Deleting garbage, expired markers and stale writer leases; releasing
  # its own lease; removing kiss storage check probes.
  statement {
    sid       = "DeleteObjects"
    actions   = ["s3:DeleteObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  # Its lease and its own objects (the closure memo, storage check probes).
  statement {
    sid       = "WriteLeaseAndMemo"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/gcroots/.lock/prune", "${local.bucket_arn}/.kiss/*"]
  }

  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }

  statement {
    sid       = "NeverCacheIdentity"
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arn}/nix-cache-info"]
  }
}

locals {
  roles = {
    reader = { policy = data.aws_iam_policy_document.reader.json, principals = var.reader_principals }
    writer = { policy = data.aws_iam_policy_document.writer.json, principals = var.writer_principals }
    pruner = { policy = data.aws_iam_policy_document.pruner.json, principals = var.pruner_principals }
  }
}

resource "aws_iam_policy" "this" {
  for_each = local.roles

  name        = "${var.bucket_name}-kiss-${each.key}"
  description = "kiss ${each.key} access to the Nix binary cache bucket ${var.bucket_name}"
  policy      = each.value.policy
  tags        = var.tags
}

data "aws_iam_policy_document" "assume" {
  for_each = { for k, v in local.roles : k => v if length(v.principals) > 0 }

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = each.value.principals
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = data.aws_iam_policy_document.assume

  name               = "${var.bucket_name}-kiss-${each.key}"
  description        = "kiss ${each.key} for the Nix binary cache bucket ${var.bucket_name}"
  assume_role_policy = each.value.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = aws_iam_role.this

  role       = each.value.name
  policy_arn = aws_iam_policy.this[each.key].arn
}

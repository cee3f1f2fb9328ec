# One policy per role in the kiss protocol. Writers push and register roots
# but cannot delete cache objects; only the pruner deletes; readers read.

data "aws_iam_policy_document" "reader" {
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
}

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ReadAndUpload"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${local.bucket_arn}/*"]
  }

  # Removing a marker (kiss roots rm) and releasing its own lease.
  statement {
    sid       = "DeleteRootsAndLeases"
    actions   = ["s3:DeleteObject"]
    resources = ["${local.bucket_arn}/gcroots/*"]
  }

  # Leases are found by listing gcroots/.lock/; writers list nothing else.
  statement {
    sid       = "ListRoots"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["gcroots/*"]
    }
  }

  statement {
    sid       = "BucketLocation"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
}

data "aws_iam_policy_document" "pruner" {
  statement {
    sid       = "ReadWriteDelete"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/*"]
  }

  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [local.bucket_arn]
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

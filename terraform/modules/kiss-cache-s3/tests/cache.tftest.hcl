# terraform test, run offline by terraform/terraform_test.go: plans with the
# real provider (fake credentials, no AWS call); computed values that the
# assertions need are fixed at plan time with override_resource. Policy
# documents are rendered at plan time and asserted decoded.

provider "aws" {
  region                      = "eu-central-1"
  access_key                  = "kiss-test"
  secret_key                  = "kiss-test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  bucket_name = "kiss-test-cache"
}

run "private_bucket_defaults" {
  command = plan

  assert {
    condition     = aws_s3_object.nix_cache_info.content == "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" && aws_s3_object.nix_cache_info.key == "nix-cache-info"
    error_message = "nix-cache-info is not written by Terraform as expected: ${aws_s3_object.nix_cache_info.content}"
  }

  assert {
    condition     = length(aws_cloudfront_distribution.this) == 0 && length(aws_cloudfront_function.not_found) == 0 && output.substituter_url == null
    error_message = "a CDN or a substituter URL without cdn and public_read"
  }

  assert {
    condition     = output.store_url == "s3://kiss-test-cache?region=eu-central-1"
    error_message = "store_url ${output.store_url}"
  }

  assert {
    condition = alltrue([aws_s3_bucket_public_access_block.this.block_public_acls, aws_s3_bucket_public_access_block.this.ignore_public_acls,
    aws_s3_bucket_public_access_block.this.block_public_policy, aws_s3_bucket_public_access_block.this.restrict_public_buckets])
    error_message = "a private bucket must block every kind of public access"
  }

  assert {
    condition     = [for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s.Sid] == ["DenyInsecureTransport", "DenyUnconditionalLeaseWrites"]
    error_message = "bucket policy statements: ${aws_s3_bucket_policy.this.policy}"
  }

  # The fix for writers on AWS: a missing key is 404 only with an
  # unconditional s3:ListBucket.
  assert {
    condition = alltrue([for s in jsondecode(data.aws_iam_policy_document.writer.json).Statement :
    !can(s.Condition) if s.Sid == "ListBucket"])
    error_message = "the writer's s3:ListBucket must not be conditioned"
  }

  assert {
    condition     = keys(output.policy_documents) == ["pruner", "reader", "writer"] && output.policy_documents["writer"] == data.aws_iam_policy_document.writer.json
    error_message = "policy_documents output"
  }
}

run "public_read" {
  command = plan

  variables {
    public_read = true
  }

  assert {
    condition = toset(one([for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s.Resource if s.Sid == "PublicReadForSubstituters"])) == toset([
      "arn:aws:s3:::kiss-test-cache/nix-cache-info", "arn:aws:s3:::kiss-test-cache/*.narinfo", "arn:aws:s3:::kiss-test-cache/nar/*",
    ])
    error_message = "public read must cover exactly nix-cache-info, *.narinfo and nar/*"
  }

  assert {
    condition     = !aws_s3_bucket_public_access_block.this.block_public_policy && !aws_s3_bucket_public_access_block.this.restrict_public_buckets && aws_s3_bucket_public_access_block.this.block_public_acls
    error_message = "public_read allows a public policy, never public ACLs"
  }
}

run "cdn" {
  command = plan

  variables {
    cdn = {}
  }

  override_resource {
    target          = aws_cloudfront_distribution.this[0]
    override_during = plan
    values = {
      arn         = "arn:aws:cloudfront::123456789012:distribution/EKISSTEST"
      domain_name = "dkisstest.cloudfront.net"
    }
  }
  override_resource {
    target          = aws_cloudfront_function.not_found[0]
    override_during = plan
    values          = { arn = "arn:aws:cloudfront::123456789012:function/kiss-not-found" }
  }
  override_resource {
    target          = aws_cloudfront_origin_access_control.this[0]
    override_during = plan
    values          = { id = "oac-kiss" }
  }
  override_resource {
    target          = aws_cloudfront_cache_policy.this["nar"]
    override_during = plan
    values          = { id = "policy-nar" }
  }
  override_resource {
    target          = aws_cloudfront_cache_policy.this["narinfo"]
    override_during = plan
    values          = { id = "policy-narinfo" }
  }
  override_resource {
    target          = aws_cloudfront_cache_policy.this["cache-info"]
    override_during = plan
    values          = { id = "policy-cache-info" }
  }

  # Behaviours in order, each with its policy; gcroots/ and .kiss/ first, so
  # *.narinfo can never match gcroots/x.narinfo.
  assert {
    condition = [for b in aws_cloudfront_distribution.this[0].ordered_cache_behavior : [b.path_pattern, b.cache_policy_id]] == [
      ["gcroots/*", "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"],
      [".kiss/*", "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"],
      ["nar/*", "policy-nar"],
      ["*.narinfo", "policy-narinfo"],
      ["nix-cache-info", "policy-cache-info"],
    ]
    error_message = "cache behaviours and their policies"
  }

  # Never served: answered at the edge by the not-found function.
  assert {
    condition = alltrue(concat(
      [for b in slice(aws_cloudfront_distribution.this[0].ordered_cache_behavior, 0, 2) :
      one(b.function_association).function_arn == "arn:aws:cloudfront::123456789012:function/kiss-not-found" && one(b.function_association).event_type == "viewer-request"],
      [one(one(aws_cloudfront_distribution.this[0].default_cache_behavior).function_association).function_arn == "arn:aws:cloudfront::123456789012:function/kiss-not-found"],
      [one(aws_cloudfront_distribution.this[0].default_cache_behavior).cache_policy_id == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"],
      [for b in slice(aws_cloudfront_distribution.this[0].ordered_cache_behavior, 2, 5) : length(b.function_association) == 0],
    ))
    error_message = "gcroots/, .kiss/ and unknown keys must be answered by the not-found function, cache objects must not"
  }

  assert {
    condition     = alltrue([for b in concat(aws_cloudfront_distribution.this[0].ordered_cache_behavior, aws_cloudfront_distribution.this[0].default_cache_behavior) : b.viewer_protocol_policy == "https-only" && b.allowed_methods == toset(["GET", "HEAD"])])
    error_message = "the CDN is read-only and HTTPS-only"
  }

  assert {
    condition = { for k, p in aws_cloudfront_cache_policy.this : k => [p.min_ttl, p.default_ttl, p.max_ttl] } == {
      nar = [0, 31536000, 31536000], narinfo = [0, 3600, 3600], cache-info = [0, 300, 300]
    }
    error_message = "cache TTLs by kind"
  }

  assert {
    condition     = { for r in aws_cloudfront_distribution.this[0].custom_error_response : r.error_code => r.error_caching_min_ttl } == { 403 = 60, 404 = 60 }
    error_message = "not-found answers are cached for negative_ttl"
  }

  assert {
    condition     = one(aws_cloudfront_distribution.this[0].origin).origin_access_control_id == "oac-kiss" && aws_cloudfront_origin_access_control.this[0].signing_behavior == "always"
    error_message = "the origin is read through origin access control"
  }

  assert {
    condition     = aws_cloudfront_function.not_found[0].code == file("${path.module}/not-found.js") && strcontains(aws_cloudfront_function.not_found[0].code, "statusCode: 404")
    error_message = "the not-found function must answer 404"
  }

  assert {
    condition = { for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s.Sid => [s.Effect, s.Principal, try(s.Condition, null), s.Resource] if startswith(s.Sid, "CloudFront") } == {
      CloudFrontReadsCacheObjects = ["Allow", { Service = "cloudfront.amazonaws.com" }, { StringEquals = { "AWS:SourceArn" = "arn:aws:cloudfront::123456789012:distribution/EKISSTEST" } },
      ["arn:aws:s3:::kiss-test-cache/nix-cache-info", "arn:aws:s3:::kiss-test-cache/*.narinfo", "arn:aws:s3:::kiss-test-cache/nar/*"]]
      CloudFrontListsForNotFound = ["Allow", { Service = "cloudfront.amazonaws.com" }, { StringEquals = { "AWS:SourceArn" = "arn:aws:cloudfront::123456789012:distribution/EKISSTEST" } },
      "arn:aws:s3:::kiss-test-cache"]
      CloudFrontNeverReadsRootsOrKiss = ["Deny", { Service = "cloudfront.amazonaws.com" }, null,
      ["arn:aws:s3:::kiss-test-cache/gcroots/*", "arn:aws:s3:::kiss-test-cache/.kiss/*"]]
    }
    error_message = "CloudFront's bucket policy statements: ${aws_s3_bucket_policy.this.policy}"
  }

  assert {
    condition     = output.substituter_url == "https://dkisstest.cloudfront.net" && aws_s3_bucket_public_access_block.this.block_public_policy
    error_message = "with a CDN, readers substitute from it and the bucket stays private"
  }
}

run "cdn_aliases" {
  command = plan

  variables {
    cdn = { aliases = ["cache.example.org"], acm_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/kiss" }
  }

  assert {
    condition     = one(aws_cloudfront_distribution.this[0].viewer_certificate).ssl_support_method == "sni-only" && one(aws_cloudfront_distribution.this[0].viewer_certificate).minimum_protocol_version == "TLSv1.2_2021" && output.substituter_url == "https://cache.example.org"
    error_message = "aliases: SNI certificate, TLS 1.2, the alias as substituter URL"
  }
}

run "bucket_name_must_be_valid" {
  command = plan

  variables {
    bucket_name = "Not_A_Bucket"
  }
  expect_failures = [var.bucket_name]
}

run "cdn_aliases_need_a_certificate" {
  command = plan

  variables {
    cdn = { aliases = ["cache.example.org"] }
  }
  expect_failures = [var.cdn]
}

run "cdn_narinfo_may_not_outlive_nar" {
  command = plan

  variables {
    cdn = { narinfo_ttl = 7200, nar_ttl = 3600 }
  }
  expect_failures = [var.cdn]
}

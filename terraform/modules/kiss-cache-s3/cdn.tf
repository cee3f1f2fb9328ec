# Optional CloudFront front (var.cdn): readers substitute from the edge, the
# bucket stays private and is read through origin access control.
#
# One cache behaviour per kind of key, matched in this order:
#   gcroots/*, .kiss/*   never served: answered 404 at the edge (a viewer-
#                        request function), nothing cached, no origin request
#   nar/*                content-addressed, never changes: cdn.nar_ttl
#   *.narinfo            cdn.narinfo_ttl: after a prune deletes a path, the
#                        edge may still serve its narinfo this long
#   nix-cache-info       cdn.cache_info_ttl
#   anything else        refused like gcroots/ (log/, realisations/, ...
#                        are not served by the CDN)
# A missing object is a 404 (the origin may list the bucket), cached for
# cdn.negative_ttl: a path pushed after a client asked for it shows up
# within that time. docs/terraform.md explains the TTLs against pruning.

locals {
  cdn_enabled = var.cdn != null
  origin_id   = "kiss-cache-s3"
  # The cacheable kinds of key, in behaviour order: path pattern, TTL and
  # whether the edge may compress (narinfos are text; NARs are compressed
  # already).
  cdn_kinds = local.cdn_enabled ? [
    { kind = "nar", path = "nar/*", ttl = var.cdn.nar_ttl, compress = false },
    { kind = "narinfo", path = "*.narinfo", ttl = var.cdn.narinfo_ttl, compress = true },
    { kind = "cache-info", path = "nix-cache-info", ttl = var.cdn.cache_info_ttl, compress = false },
  ] : []
  cdn_policies = { for k in local.cdn_kinds : k.kind => k }
  # CloudFront's managed CachingDisabled policy.
  caching_disabled_policy_id = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
}

resource "aws_cloudfront_origin_access_control" "this" {
  count = local.cdn_enabled ? 1 : 0

  name                              = "${var.bucket_name}-kiss"
  description                       = "CloudFront reads the kiss cache bucket ${var.bucket_name}"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_cache_policy" "this" {
  for_each = local.cdn_policies

  name        = "${var.bucket_name}-kiss-${each.key}"
  comment     = "kiss ${each.key}: cached ${each.value.ttl}s whatever the object says"
  min_ttl     = 0
  default_ttl = each.value.ttl
  max_ttl     = each.value.ttl

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = each.value.compress
    enable_accept_encoding_brotli = each.value.compress

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

# Everything that is not a cache object a substituter fetches is answered
# at the edge, before any cache lookup or origin request.
resource "aws_cloudfront_function" "not_found" {
  count = local.cdn_enabled ? 1 : 0

  name    = "${replace(var.bucket_name, ".", "-")}-kiss-not-found"
  runtime = "cloudfront-js-2.0"
  comment = "kiss: gcroots/, .kiss/ and other non-cache keys are never served"
  publish = true
  code    = file("${path.module}/not-found.js")
}

resource "aws_cloudfront_distribution" "this" {
  count = local.cdn_enabled ? 1 : 0

  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  comment         = "kiss Nix binary cache ${var.bucket_name}"
  price_class     = var.cdn.price_class
  aliases         = var.cdn.aliases
  tags            = var.tags

  origin {
    origin_id                = local.origin_id
    domain_name              = aws_s3_bucket.this.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.this[0].id
  }

  # Roots, leases and kiss's own objects: never cached, never served.
  dynamic "ordered_cache_behavior" {
    for_each = ["gcroots/*", ".kiss/*"]
    content {
      path_pattern           = ordered_cache_behavior.value
      target_origin_id       = local.origin_id
      viewer_protocol_policy = "https-only"
      allowed_methods        = ["GET", "HEAD"]
      cached_methods         = ["GET", "HEAD"]
      cache_policy_id        = local.caching_disabled_policy_id

      function_association {
        event_type   = "viewer-request"
        function_arn = aws_cloudfront_function.not_found[0].arn
      }
    }
  }

  # Cache objects, each kind with its cache policy.
  dynamic "ordered_cache_behavior" {
    for_each = local.cdn_kinds
    content {
      path_pattern           = ordered_cache_behavior.value.path
      target_origin_id       = local.origin_id
      viewer_protocol_policy = "https-only"
      allowed_methods        = ["GET", "HEAD"]
      cached_methods         = ["GET", "HEAD"]
      cache_policy_id        = aws_cloudfront_cache_policy.this[ordered_cache_behavior.value.kind].id
      compress               = ordered_cache_behavior.value.compress
    }
  }

  default_cache_behavior {
    target_origin_id       = local.origin_id
    viewer_protocol_policy = "https-only"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = local.caching_disabled_policy_id

    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.not_found[0].arn
    }
  }

  # Not-found answers are cached only this long, so a path pushed after a
  # client asked for it is seen soon.
  dynamic "custom_error_response" {
    for_each = [403, 404]
    content {
      error_code            = custom_error_response.value
      error_caching_min_ttl = var.cdn.negative_ttl
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = var.cdn.acm_certificate_arn == null
    acm_certificate_arn            = var.cdn.acm_certificate_arn
    ssl_support_method             = var.cdn.acm_certificate_arn == null ? null : "sni-only"
    minimum_protocol_version       = var.cdn.acm_certificate_arn == null ? "TLSv1" : "TLSv1.2_2021"
  }
}

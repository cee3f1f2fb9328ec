output "bucket_name" {
  description = "Name of the cache bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the cache bucket."
  value       = local.bucket_arn
}

output "bucket_region" {
  description = "Region of the cache bucket (the provider's)."
  value       = data.aws_region.current.name
}

output "store_url" {
  description = "Store URL for kiss (kiss prune / kiss with-lock / kiss serve --store / services.kiss.*.store); known at plan time."
  value       = "s3://${var.bucket_name}?region=${data.aws_region.current.name}"
}

output "substituter_url" {
  description = "HTTPS base URL Nix substitutes from: the CDN when cdn is set, else the bucket's endpoint when public_read, else null (put kiss serve in front)."
  value = (local.cdn_enabled ? "https://${try(var.cdn.aliases[0], aws_cloudfront_distribution.this[0].domain_name)}" :
  var.public_read ? "https://${aws_s3_bucket.this.bucket_regional_domain_name}" : null)
}

output "policy_arns" {
  description = "IAM policy ARNs by role: reader, writer, pruner. Attach them to your own roles or users."
  value       = { for k, p in aws_iam_policy.this : k => p.arn }
}

output "policy_documents" {
  description = "The IAM policy documents (JSON) by role: reader, writer, pruner; known at plan time."
  value       = { for k, r in local.roles : k => r.policy }
}

output "role_arns" {
  description = "ARNs of the roles created for non-empty *_principals, by role."
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}

output "cdn_distribution_id" {
  description = "ID of the CloudFront distribution (for invalidations), or null without cdn."
  value       = try(aws_cloudfront_distribution.this[0].id, null)
}

output "cdn_domain_name" {
  description = "The distribution's own domain name (point your aliases at it), or null without cdn."
  value       = try(aws_cloudfront_distribution.this[0].domain_name, null)
}

output "bucket_name" {
  description = "Name of the cache bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the cache bucket."
  value       = aws_s3_bucket.this.arn
}

output "bucket_region" {
  description = "Region of the cache bucket."
  value       = aws_s3_bucket.this.region
}

output "store_url" {
  description = "Store URL for kiss (kiss prune / kiss serve --store / services.kiss.*.store)."
  value       = "s3://${aws_s3_bucket.this.bucket}?region=${aws_s3_bucket.this.region}"
}

output "substituter_url" {
  description = "HTTPS base URL Nix can substitute from when public_read is true, else null."
  value       = var.public_read ? "https://${aws_s3_bucket.this.bucket_regional_domain_name}" : null
}

output "policy_arns" {
  description = "IAM policy ARNs by role: reader, writer, pruner. Attach them to your own roles or users."
  value       = { for k, p in aws_iam_policy.this : k => p.arn }
}

output "role_arns" {
  description = "ARNs of the roles created for non-empty *_principals, by role."
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}

output "store_url" {
  description = "The cache for kiss: kiss with-lock s3://…/gcroots/NAME, kiss prune, kiss serve --store."
  value       = module.cache.store_url
}

output "substituter_url" {
  description = "Add to nix.settings.substituters (with your signing key in trusted-public-keys)."
  value       = module.cache.substituter_url
}

output "cdn_distribution_id" {
  description = "Invalidate cached narinfos after a large prune: aws cloudfront create-invalidation --distribution-id ID --paths '/*.narinfo'."
  value       = module.cache.cdn_distribution_id
}

output "role_arns" {
  description = "Roles to assume for writing (and reading or pruning by hand)."
  value       = module.cache.role_arns
}

output "prune_function_name" {
  description = "Run a prune now: aws lambda invoke --function-name NAME --payload EVENT out.json."
  value       = module.prune.function_name
}

output "prune_event" {
  description = "The event the schedule sends to the prune function."
  value       = module.prune.event
}

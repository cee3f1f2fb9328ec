output "store_url" {
  description = "Pass to kiss: kiss prune <store_url>, services.kiss.prune.store."
  value       = module.cache.store_url
}

output "substituter_url" {
  description = "Add to nix.settings.substituters (with your signing key in trusted-public-keys)."
  value       = module.cache.substituter_url
}

output "role_arns" {
  description = "Roles to assume for writing and pruning."
  value       = module.cache.role_arns
}

# A public kiss cache in one region: CI (writer) pushes, a scheduled pruner
# deletes, everyone substitutes over HTTPS.
#
#   terraform init && terraform apply -var bucket_name=my-nix-cache \
#     -var 'ci_role_arns=["arn:aws:iam::123456789012:role/ci"]'

provider "aws" {
  region = var.region
}

module "cache" {
  source = "../../modules/kiss-cache-s3"

  bucket_name       = var.bucket_name
  public_read       = true
  undelete_days     = 14
  writer_principals = var.ci_role_arns
  pruner_principals = var.pruner_role_arns
  tags              = { project = "nix-cache" }
}

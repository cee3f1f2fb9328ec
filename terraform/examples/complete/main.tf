# A private kiss cache behind a CDN, pruned every night with no host:
# CI pushes with the writer role (kiss with-lock … nix copy), everyone
# substitutes from CloudFront, a Lambda function prunes with the pruner role.
# docs/terraform.md walks through it from an empty account.
#
#   GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -trimpath \
#       -o bootstrap ./cmd/kiss-lambda && zip -j kiss-lambda.zip bootstrap
#   terraform init && terraform apply -var bucket_name=my-nix-cache \
#     -var package_zip=kiss-lambda.zip \
#     -var 'ci_role_arns=["arn:aws:iam::123456789012:role/ci"]'

provider "aws" {
  region = var.region
}

module "cache" {
  source = "../../modules/kiss-cache-s3"

  bucket_name       = var.bucket_name
  undelete_days     = 14
  writer_principals = var.ci_role_arns
  cdn = {
    narinfo_ttl  = 3600
    negative_ttl = 60
  }
  tags = { project = "nix-cache" }
}

module "prune" {
  source = "../../modules/kiss-prune-lambda"

  name              = "${var.bucket_name}-prune"
  store_url         = module.cache.store_url
  pruner_policy_arn = module.cache.policy_arns["pruner"]
  package_zip       = var.package_zip
  root_max_age      = "30d"
  alarm_actions     = var.alarm_topic_arns
  tags              = { project = "nix-cache" }
}

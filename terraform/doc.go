// Package terraform holds no Go code: it is the home of kiss's Terraform
// (modules/kiss-cache-s3, modules/kiss-prune-lambda, examples/) and of the
// tests that prove it with the real tools, offline:
//
//   - terraform_test.go: `terraform fmt -check`; every module initialised
//     from the provider mirror, validated, and put through its own
//     `terraform test` (tests/*.tftest.hcl); every example planned with fake
//     credentials and its rendered plan (`terraform show -json`) asserted
//     on: every IAM and bucket policy document, lifecycle rules, public
//     access, the CDN's behaviours and TTLs, the prune function and its
//     schedule.
//   - minio_test.go: the role policies from the plan loaded into a real S3
//     server (MinIO, AWS policy language), one identity per role, each role
//     exercised through kiss itself, every forbidden action refused; and the
//     Lambda pruner run under the Lambda Runtime Interface Emulator with the
//     pruner role, pruning the bucket the writer filled.
//
// Missing terraform (or the provider mirror), MinIO or the emulator skip
// these tests and say so; with CI set they fail instead (internal/testenv).
package terraform

// Package terraform holds no Go code: it is the home of kiss's Terraform
// modules (modules/kiss-cache-s3, examples/) and of their offline tests.
//
// It is a separate Go module so that HCL and terraform-config-inspect stay
// out of kiss's own go.mod. No Terraform provider can be downloaded where
// kiss is tested, so `tofu validate`/`plan` cannot run; check.sh runs tflint
// (bundled terraform ruleset) and these tests, which parse the
// configuration with hcl/v2 and terraform-config-inspect and assert its
// structure: formatting, typed and described variables, the bucket's
// protections, the bucket policy and the separation of the IAM roles.
package terraform

terraform {
  required_version = ">= 1.6"

  # Tested with provider 5.100.0 (terraform/terraform_test.go); 6.x was
  # never tried.
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}

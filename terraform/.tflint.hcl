# tflint with its bundled terraform ruleset only: the aws ruleset plugin
# cannot be downloaded where kiss is tested (terraform/check.sh).
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}

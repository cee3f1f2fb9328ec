# terraform test, run offline by terraform/terraform_test.go: plans with the
# real provider (fake credentials, no AWS call); computed ARNs are fixed at
# plan time with override_resource.

provider "aws" {
  region                      = "eu-central-1"
  access_key                  = "kiss-test"
  secret_key                  = "kiss-test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  store_url         = "s3://kiss-test-cache?region=eu-central-1"
  pruner_policy_arn = "arn:aws:iam::123456789012:policy/kiss-test-cache-kiss-pruner"
  # Any file stands in for the deployment package at plan time.
  package_zip = "main.tf"
}

run "defaults" {
  command = plan

  override_resource {
    target          = aws_lambda_function.this
    override_during = plan
    values          = { arn = "arn:aws:lambda:eu-central-1:123456789012:function:kiss-prune" }
  }

  assert {
    condition = (aws_lambda_function.this.runtime == "provided.al2023" && aws_lambda_function.this.handler == "bootstrap" &&
      aws_lambda_function.this.architectures == tolist(["arm64"]) && aws_lambda_function.this.timeout == 900 && aws_lambda_function.this.memory_size == 1024 && aws_lambda_function.this.ephemeral_storage[0].size == 2048 &&
    aws_lambda_function.this.environment[0].variables == tomap({ KISS_STORE = "s3://kiss-test-cache?region=eu-central-1" }))
    error_message = "function settings"
  }

  assert {
    condition     = jsondecode(aws_scheduler_schedule.this.target[0].input) == { store = "s3://kiss-test-cache?region=eu-central-1", lock_ttl = "5m", lock_wait = "2m" } && output.event == aws_scheduler_schedule.this.target[0].input
    error_message = "the scheduled event: ${aws_scheduler_schedule.this.target[0].input}"
  }

  assert {
    condition = (aws_scheduler_schedule.this.schedule_expression == "cron(17 3 * * ? *)" && aws_scheduler_schedule.this.target[0].arn == "arn:aws:lambda:eu-central-1:123456789012:function:kiss-prune" &&
    aws_scheduler_schedule.this.target[0].retry_policy[0].maximum_retry_attempts == 0 && aws_lambda_function_event_invoke_config.this.maximum_retry_attempts == 0)
    error_message = "a failed run is retried by nobody: the next scheduled run comes"
  }

  # The function gets the pruner policy and may write its own logs, nothing
  # else; the scheduler may invoke this function and nothing else.
  assert {
    condition     = aws_iam_role_policy_attachment.pruner.policy_arn == var.pruner_policy_arn
    error_message = "the function's role must get the pruner policy"
  }
  assert {
    condition = jsondecode(data.aws_iam_policy_document.logs.json).Statement == [{
      Sid      = "WriteOwnLogs", Effect = "Allow", Action = ["logs:PutLogEvents", "logs:CreateLogStream"],
      Resource = "arn:aws:logs:*:*:log-group:/aws/lambda/kiss-prune:*"
    }]
    error_message = "logs policy: ${data.aws_iam_policy_document.logs.json}"
  }
  assert {
    condition = jsondecode(aws_iam_role_policy.invoke.policy).Statement == [{
      Sid      = "InvokePruneFunction", Effect = "Allow", Action = "lambda:InvokeFunction",
      Resource = "arn:aws:lambda:eu-central-1:123456789012:function:kiss-prune"
    }]
    error_message = "invoke policy: ${aws_iam_role_policy.invoke.policy}"
  }
  assert {
    condition = (jsondecode(aws_iam_role.function.assume_role_policy).Statement[0].Principal == { Service = "lambda.amazonaws.com" } &&
    jsondecode(aws_iam_role.scheduler.assume_role_policy).Statement[0].Principal == { Service = "scheduler.amazonaws.com" })
    error_message = "trust policies"
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.failed) == 0 && length(aws_cloudwatch_metric_alarm.not_run) == 0
    error_message = "no alarms without alarm_actions"
  }
}

run "options_and_alarms" {
  command = plan

  variables {
    grace         = "6h"
    root_max_age  = "30d"
    extra_roots   = ["releases/"]
    dry_run       = true
    alarm_actions = ["arn:aws:sns:eu-central-1:123456789012:ops"]
  }

  assert {
    condition = jsondecode(aws_scheduler_schedule.this.target[0].input) == {
      store   = "s3://kiss-test-cache?region=eu-central-1", grace = "6h", root_max_age = "30d", roots = ["releases/"],
      dry_run = true, lock_ttl = "5m", lock_wait = "2m"
    }
    error_message = "the scheduled event: ${aws_scheduler_schedule.this.target[0].input}"
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.failed[0].metric_name == "Errors" && aws_cloudwatch_metric_alarm.failed[0].threshold == 1 &&
      aws_cloudwatch_metric_alarm.not_run[0].metric_name == "Invocations" && aws_cloudwatch_metric_alarm.not_run[0].evaluation_periods == 2 &&
    aws_cloudwatch_metric_alarm.not_run[0].treat_missing_data == "breaching")
    error_message = "alarms: a failed run, and no run for two days"
  }
}

run "timeout_at_most_15_minutes" {
  command = plan

  variables {
    timeout = 901
  }
  expect_failures = [var.timeout]
}

run "store_must_be_s3" {
  command = plan

  variables {
    store_url = "file:///var/cache/nix"
  }
  expect_failures = [var.store_url]
}

run "architecture_must_be_known" {
  command = plan

  variables {
    architecture = "ppc64le"
  }
  expect_failures = [var.architecture]
}

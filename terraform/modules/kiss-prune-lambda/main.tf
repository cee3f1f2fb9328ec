# kiss prune with no host: EventBridge Scheduler invokes a Lambda function
# (cmd/kiss-lambda, runtime provided.al2023) that runs the library prune of
# kiss prune with the pruner policy. A failed run is not retried (the next
# scheduled one is); its errorType says why (KissPruneRefused, ...).

data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
  log_group = "/aws/lambda/${var.name}"
  # What the schedule sends: cmd/kiss-lambda's Event. Unset options are
  # left out, so the function's defaults (kiss prune's) apply.
  event = { for k, v in {
    store        = var.store_url
    grace        = var.grace
    root_max_age = var.root_max_age
    roots        = length(var.extra_roots) > 0 ? var.extra_roots : null
    lock_ttl     = var.lock_ttl
    lock_wait    = var.lock_wait
    dry_run      = var.dry_run ? true : null
  } : k => v if v != null }
}

resource "aws_cloudwatch_log_group" "this" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# Who may assume each role: the function's and the scheduler's.
data "aws_iam_policy_document" "assume" {
  for_each = { function = "lambda.amazonaws.com", scheduler = "scheduler.amazonaws.com" }

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = [each.value]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name}-function"
  description        = "kiss prune Lambda function: the pruner policy and its own logs"
  assume_role_policy = data.aws_iam_policy_document.assume["function"].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "pruner" {
  role       = aws_iam_role.function.name
  policy_arn = var.pruner_policy_arn
}

# Its own log group only (the log group is created here, not by Lambda).
data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${local.partition}:logs:*:*:log-group:${local.log_group}:*"]
  }
}

resource "aws_iam_role_policy" "logs" {
  name   = "logs"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.logs.json
}

resource "aws_lambda_function" "this" {
  function_name    = var.name
  description      = "kiss prune ${var.store_url}"
  role             = aws_iam_role.function.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = var.package_zip
  source_code_hash = filebase64sha256(var.package_zip)
  memory_size      = var.memory_size
  timeout          = var.timeout
  tags             = var.tags

  ephemeral_storage {
    size = var.ephemeral_storage
  }

  environment {
    variables = {
      KISS_STORE = var.store_url # for an invocation with an empty event
    }
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.this.name
    application_log_level = "INFO"
    system_log_level      = "WARN"
  }

  depends_on = [aws_iam_role_policy.logs, aws_iam_role_policy_attachment.pruner]
}

# A failed prune waits for the next scheduled run: retrying at once would
# meet the same refusal, or a lease its own timed-out run left behind.
resource "aws_lambda_function_event_invoke_config" "this" {
  function_name          = aws_lambda_function.this.function_name
  maximum_retry_attempts = 0
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  description        = "EventBridge Scheduler invokes the kiss prune function"
  assume_role_policy = data.aws_iam_policy_document.assume["scheduler"].json
  tags               = var.tags
}

# HCL rather than a policy document data source, whose read would wait for
# the function's ARN until apply.
resource "aws_iam_role_policy" "invoke" {
  name = "invoke"
  role = aws_iam_role.scheduler.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "InvokePruneFunction"
      Effect   = "Allow"
      Action   = "lambda:InvokeFunction"
      Resource = aws_lambda_function.this.arn
    }]
  })
}

resource "aws_scheduler_schedule" "this" {
  name                         = var.name
  description                  = "kiss prune ${var.store_url}"
  schedule_expression          = var.schedule
  schedule_expression_timezone = var.schedule_timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this.arn
    role_arn = aws_iam_role.scheduler.arn
    input    = jsonencode(local.event)

    retry_policy {
      maximum_retry_attempts = 0
    }
  }
}

# Alarms (with alarm_actions): a failed run, and no run for
# alarm_no_run_days.
resource "aws_cloudwatch_metric_alarm" "failed" {
  count = length(var.alarm_actions) > 0 ? 1 : 0

  alarm_name          = "${var.name}-failed"
  alarm_description   = "kiss prune of ${var.store_url} failed; its log says why (errorType, report)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "not_run" {
  count = length(var.alarm_actions) > 0 ? 1 : 0

  alarm_name          = "${var.name}-not-run"
  alarm_description   = "kiss prune of ${var.store_url} has not run for ${var.alarm_no_run_days} days."
  namespace           = "AWS/Lambda"
  metric_name         = "Invocations"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = var.alarm_no_run_days
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  tags                = var.tags
}

output "function_name" {
  description = "Name of the prune function (aws lambda invoke --function-name … to run a prune now)."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the prune function."
  value       = aws_lambda_function.this.arn
}

output "function_role_arn" {
  description = "ARN of the function's role (the pruner policy and its own logs)."
  value       = aws_iam_role.function.arn
}

output "schedule_arn" {
  description = "ARN of the EventBridge Scheduler schedule."
  value       = aws_scheduler_schedule.this.arn
}

output "event" {
  description = "The event each scheduled run gets (JSON): pass it to aws lambda invoke for a run outside the schedule."
  value       = jsonencode(local.event)
}

output "log_group_name" {
  description = "CloudWatch log group of the runs: one JSON report per run."
  value       = aws_cloudwatch_log_group.this.name
}

output "function_urls" {
  description = "Each function's HTTPS URL."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.url }
}

output "runpod_webhook_url" {
  description = "What `python -m infra runpod deploy` writes into runpod.auto.tfvars.json."
  value       = local.runpod_webhook_url
}

output "home_worker_service_account" {
  description = "The account the home 4090 worker runs as."
  value       = google_service_account.home_worker.email
}

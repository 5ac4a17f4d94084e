output "function_urls" {
  description = "Each function's HTTPS URL (cloudfunctions.net; the public ones answer there)."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.url }
}

output "function_run_urls" {
  description = "Each function's run.app URL: what Pub/Sub pushes to (internal traffic)."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.service_config[0].uri }
}

output "voices_bucket" {
  description = "Where voice prompt files go (TTS_VOICES__BUCKET): the bucket storage triggers watch."
  value       = google_storage_bucket.voices.name
}

output "runpod_webhook_url" {
  description = "What `python -m infra runpod deploy` writes into runpod.auto.tfvars.json."
  value       = local.runpod_webhook_url
}

output "home_worker_service_account" {
  description = "The account the home 4090 worker runs as."
  value       = google_service_account.account["home_worker"].email
}

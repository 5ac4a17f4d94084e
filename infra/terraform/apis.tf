locals {
  apis = toset([
    "artifactregistry.googleapis.com", # where gen2 functions' images are stored
    "cloudbuild.googleapis.com",       # builds each function from its source zip
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com", # the storage and topic triggers
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # signBlob: V4 signed URLs without a key file
    "logging.googleapis.com",        # the log-based metrics (monitoring.tf)
    "monitoring.googleapis.com",     # dashboard, SLO and alert policies
    "cloudtrace.googleapis.com",     # traces, one per job (shared/tracing.py)
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions are Cloud Run services
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "api" {
  for_each = local.apis
  service  = each.key

  # Turning an API off on destroy would break whatever else in the project uses it.
  disable_on_destroy         = false
  disable_dependent_services = false
}

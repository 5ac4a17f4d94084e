# One identity per role; every grant is on the narrowest resource that works. See the README's
# IAM table for the why of each.
data "google_project" "this" {}

resource "google_service_account" "functions" {
  account_id   = "tts-functions"
  display_name = "TTS gateway functions (runtime)"
  depends_on   = [google_project_service.api]
}

resource "google_service_account" "push" {
  account_id   = "tts-pubsub-push"
  display_name = "Pub/Sub push to the TTS functions"
  depends_on   = [google_project_service.api]
}

resource "google_service_account" "eventarc" {
  account_id   = "tts-eventarc"
  display_name = "Eventarc triggers of the TTS functions"
  depends_on   = [google_project_service.api]
}

resource "google_service_account" "home_worker" {
  account_id   = "tts-home-worker"
  display_name = "TTS home RTX 4090 worker"
  depends_on   = [google_project_service.api]
}

# The Google-managed agents this deployment grants to.
data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.api]
}

resource "google_project_service_identity" "pubsub" {
  provider   = google-beta
  service    = "pubsub.googleapis.com"
  depends_on = [google_project_service.api]
}

# ---- The functions' runtime account ----

resource "google_project_iam_member" "functions_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_storage_bucket_iam_member" "functions_bucket" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.functions.email}"
}

# V4 signed URLs are signed by IAM signBlob as the runtime account itself (no key file).
resource "google_service_account_iam_member" "functions_sign_as_self" {
  service_account_id = google_service_account.functions.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_secret_manager_secret_iam_member" "functions_secret" {
  for_each  = local.secrets
  secret_id = google_secret_manager_secret.secret[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_pubsub_topic_iam_member" "functions_publish" {
  for_each = local.functions_publish_to
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.functions.email}"
}

# Reply topics are the operator's, named in var.reply_topics; announcing a result publishes there.
resource "google_pubsub_topic_iam_member" "reply_publish" {
  for_each = { for pair in setproduct(var.reply_topics, ["functions", "home_worker"]) : "${pair[0]}/${pair[1]}" => pair }
  topic    = "projects/${var.project_id}/topics/${each.value[0]}"
  role     = "roles/pubsub.publisher"
  member   = each.value[1] == "functions" ? "serviceAccount:${google_service_account.functions.email}" : "serviceAccount:${google_service_account.home_worker.email}"
}

# ---- Pub/Sub push: may call the functions subscriptions push to, nothing else ----

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.pushed_functions
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# ---- Eventarc: delivers storage and topic events to the event functions ----

resource "google_project_iam_member" "eventarc_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.eventarc.email}"
}

resource "google_cloud_run_v2_service_iam_member" "eventarc_invoker" {
  for_each = local.event_functions
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.eventarc.email}"
}

# ---- Public HTTP functions: deliberately open. The API checks its own keys on every route but
# health and the RunPod webhook a per-job HMAC token; neither caller holds a Google identity. ----

resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  for_each = local.public_functions
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# ---- Google's agents ----

# Storage triggers: Cloud Storage publishes its object events to Pub/Sub as this agent.
resource "google_project_iam_member" "gcs_agent_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Dead letters: Pub/Sub forwards as its agent, which must publish to the dead-letter topic and
# subscribe to (acknowledge on) the source subscription, or nothing is ever dead-lettered.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter" {
  for_each = local.dead_letter_topics
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_source" {
  for_each     = local.dead_lettered
  subscription = google_pubsub_subscription.subscription[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# Authenticated push mints OIDC tokens as the push (and Eventarc) accounts; projects made
# before April 2021 do not give the agent this by default.
resource "google_service_account_iam_member" "pubsub_agent_token" {
  for_each = {
    push     = google_service_account.push.name
    eventarc = google_service_account.eventarc.name
  }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# ---- The home 4090 worker: its subscription, its results, jobs and the bucket ----

resource "google_pubsub_subscription_iam_member" "home_worker_pull" {
  for_each     = local.home_worker_pulls_from
  subscription = google_pubsub_subscription.subscription[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.home_worker.email}"
}

resource "google_pubsub_topic_iam_member" "home_worker_publish" {
  for_each = local.home_worker_publishes_to
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.home_worker.email}"
}

resource "google_project_iam_member" "home_worker_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.home_worker.email}"
}

resource "google_storage_bucket_iam_member" "home_worker_bucket" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.home_worker.email}"
}

# No access to the webhook signing key: the worker never calls back (it sits on the home
# network, where a caller's URL must never reach); the monitor sends its jobs' webhooks.

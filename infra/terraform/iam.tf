# One identity per role; every grant is on the narrowest resource that works. See the README's
# IAM table for the why of each.

resource "google_service_account" "functions" {
  account_id   = "tts-functions"
  display_name = "TTS gateway functions (runtime)"
  depends_on   = [google_project_service.api]
}

# Cloud Build builds every function as this account (build_config.service_account). Unnamed,
# new projects build with the Compute Engine default account, which organisations with the
# default-grants policy (iam.automaticIamGrantsForDefaultServiceAccounts) leave without roles.
resource "google_service_account" "build" {
  account_id   = "tts-build"
  display_name = "Cloud Build of the TTS functions"
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

# The Google-managed agents this deployment grants to. Pub/Sub's and Eventarc's are created
# here (they may not exist yet in a new project); Cloud Storage's exists once its API is on.
data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.api]
}

resource "google_project_service_identity" "pubsub" {
  provider   = google-beta
  service    = "pubsub.googleapis.com"
  depends_on = [google_project_service.api]
}

resource "google_project_service_identity" "eventarc" {
  provider   = google-beta
  service    = "eventarc.googleapis.com"
  depends_on = [google_project_service.api]
}

# ---- The functions' runtime account ----

# Both databases: (default) (jobs, voices, backends, events, the cache) and the keys' own.
resource "google_project_iam_member" "functions_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_project_iam_member" "functions_trace" {
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_storage_bucket_iam_member" "functions_bucket" {
  for_each = {
    data   = google_storage_bucket.data.name
    voices = google_storage_bucket.voices.name
  }
  bucket = each.value
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

# ---- The build account: what Google's documentation asks of a custom build account (logs,
# the gcf-artifacts images, the sources), the storage part narrowed to Cloud Functions' own
# gcf-v2-* buckets and this deployment's sources bucket. ----

resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_project_iam_member" "build_images" {
  project = var.project_id
  role    = "roles/artifactregistry.writer"
  member  = "serviceAccount:${google_service_account.build.email}"
}

# The documentation grants storage.objectAdmin on the project "to retrieve the function source
# and store build images"; the staging buckets Cloud Functions makes are named gcf-v2-sources-*
# and gcf-v2-uploads-*. If a build still reports a 403 on another bucket, widen this condition
# (or drop it) rather than the runtime accounts' grants.
resource "google_project_iam_member" "build_staging" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = "serviceAccount:${google_service_account.build.email}"
  condition {
    title       = "gcf-staging-buckets"
    description = "Cloud Functions' own staging buckets only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")"
  }
}

resource "google_storage_bucket_iam_member" "build_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
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
# health and the RunPod webhook a per-job HMAC token; neither caller holds a Google identity.
# Organisations that restrict policy members to their domains (iam.allowedPolicyMemberDomains)
# refuse `allUsers`: either make that policy's exception for this project, or set
# var.public_invoker = "none" and turn Cloud Run's invoker check off (README, Deploying). ----

resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  for_each = var.public_invoker == "allUsers" ? local.public_functions : {}
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

# Eventarc's own agent needs its agent role before the first trigger can be made; in a new
# project it may not have it yet.
resource "google_project_iam_member" "eventarc_agent" {
  #checkov:skip=CKV_GCP_49:Google's own Eventarc service agent receiving its own agent role (roles/eventarc.serviceAgent), as Google documents for new projects; no user-managed account gains impersonation.
  project = var.project_id
  role    = "roles/eventarc.serviceAgent"
  member  = "serviceAccount:${google_project_service_identity.eventarc.email}"
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

# ---- The deployer acts as these accounts (functions run as them, Cloud Build builds as one,
# Eventarc and Pub/Sub push sign their calls as two), each granted here rather than through a
# project-wide serviceAccountUser (infra/deployer.sh). ----

resource "google_service_account_iam_member" "deployer_act_as" {
  for_each = var.deployer_service_account == "" ? {} : {
    functions = google_service_account.functions.name
    build     = google_service_account.build.name
    push      = google_service_account.push.name
    eventarc  = google_service_account.eventarc.name
  }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${var.deployer_service_account}"
}

# New service agents and IAM grants take minutes to be seen everywhere; a first apply that
# builds functions and makes triggers at once fails on them ("permission denied" for the build
# account, Eventarc's agent or the storage agent). The functions wait this long after all of
# them on the first apply; later applies do not wait (nothing here changes).
resource "time_sleep" "grants_propagate" {
  create_duration = "120s"

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_images,
    google_project_iam_member.build_staging,
    google_storage_bucket_iam_member.build_sources,
    google_project_iam_member.gcs_agent_publisher,
    google_project_iam_member.eventarc_agent,
    google_project_iam_member.eventarc_receiver,
    google_service_account_iam_member.pubsub_agent_token,
    google_secret_manager_secret_iam_member.functions_secret,
    google_service_account_iam_member.deployer_act_as,
  ]
}

# ---- The home 4090 worker: its subscription, jobs and results, its prefixes of the buckets ----

resource "google_pubsub_subscription_iam_member" "home_worker_pull" {
  for_each     = local.home_worker_pulls_from
  subscription = google_pubsub_subscription.subscription[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.home_worker.email}"
}

# tts-results (announcements) and tts-jobs (the join job it makes when it finishes the last
# item of a joined batch): topology.yaml's publishers.
resource "google_pubsub_topic_iam_member" "home_worker_publish" {
  for_each = local.home_worker_publishes_to
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.home_worker.email}"
}

# The (default) database only: jobs, voices, backends, events, the cache. Not the keys'
# database, so a stolen worker key can neither read API keys nor write an admin one. (Firestore
# evaluates IAM conditions on the database's resource name; collections cannot be told apart.)
resource "google_project_iam_member" "home_worker_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.home_worker.email}"
  condition {
    title       = "default-database-only"
    description = "Jobs, voices, backends, events and the cache; never the API keys' database"
    expression  = "resource.name == \"projects/${var.project_id}/databases/(default)\""
  }
}

resource "google_project_iam_member" "home_worker_trace" {
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.home_worker.email}"
}

# Its log lines (TTS_WORKER__CLOUD_LOGGING): nobody collects a home PC's stderr, and the
# log-based metrics read its "job ended", "job claimed" and "first audio" lines.
resource "google_project_iam_member" "home_worker_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.home_worker.email}"
}

# Its prefixes only (IAM conditions on object names; the worker never lists a bucket):
# read and write audio/ (finished audio, stream pieces, joins read their items), read uploads/
# (reference clips, files to normalise), read and write voice-prompts/ in the voices bucket
# (prompts it speaks with, voices it makes), and create under quarantine/ (a prompt it made
# that fails the registry's check is moved there). Nothing else, and no listing.
locals {
  home_worker_objects = {
    audio = {
      bucket = google_storage_bucket.data.name
      prefix = "audio/"
      role   = "roles/storage.objectUser"
    }
    uploads = {
      bucket = google_storage_bucket.data.name
      prefix = "uploads/"
      role   = "roles/storage.objectViewer"
    }
    voices = {
      bucket = google_storage_bucket.voices.name
      prefix = "voice-prompts/"
      role   = "roles/storage.objectUser"
    }
    quarantine = {
      bucket = google_storage_bucket.voices.name
      prefix = "quarantine/"
      role   = "roles/storage.objectCreator"
    }
  }
}

resource "google_storage_bucket_iam_member" "home_worker_objects" {
  for_each = local.home_worker_objects
  bucket   = each.value.bucket
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.home_worker.email}"
  condition {
    title       = "prefix-${each.key}"
    description = "Objects under ${each.value.prefix} only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${each.value.bucket}/objects/${each.value.prefix}\")"
  }
}

# No access to the webhook signing key: the worker never calls back (it sits on the home
# network, where a caller's URL must never reach); the monitor sends its jobs' webhooks.

# One identity per role; every grant is on the narrowest resource that works. See the README's
# IAM table for the why of each. Grants with fixed names are one resource per kind of grant, over
# a map keyed by who is granted what for; grants per topology entry iterate over topology.tf's
# sets. moved.tf carries the addresses these had as separate resources.

locals {
  service_accounts = {
    functions = { account_id = "tts-functions", display_name = "TTS gateway functions (runtime)" }
    # Cloud Build builds every function as this account (build_config.service_account). Unnamed,
    # new projects build with the Compute Engine default account, which organisations with the
    # default-grants policy (iam.automaticIamGrantsForDefaultServiceAccounts) leave without roles.
    build       = { account_id = "tts-build", display_name = "Cloud Build of the TTS functions" }
    push        = { account_id = "tts-pubsub-push", display_name = "Pub/Sub push to the TTS functions" }
    eventarc    = { account_id = "tts-eventarc", display_name = "Eventarc triggers of the TTS functions" }
    home_worker = { account_id = "tts-home-worker", display_name = "TTS home RTX 4090 worker" }
  }
}

resource "google_service_account" "account" {
  for_each     = local.service_accounts
  account_id   = each.value.account_id
  display_name = each.value.display_name
  depends_on   = [google_project_service.api]
}

# The Google-managed agents this deployment grants to. Pub/Sub's and Eventarc's are created
# here (they may not exist yet in a new project); Cloud Storage's exists once its API is on.
data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.api]
}

resource "google_project_service_identity" "agent" {
  for_each   = toset(["pubsub", "eventarc"])
  provider   = google-beta
  service    = "${each.key}.googleapis.com"
  depends_on = [google_project_service.api]
}

# Who the grants below name (`who` in the maps): the accounts above by their keys, the agents,
# the deployer. The maps name members by key, not by value, and hold no variables, so checkov
# can expand each grant and check its role.
locals {
  member = merge(
    { for k, account in google_service_account.account : k => "serviceAccount:${account.email}" },
    {
      gcs_agent      = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
      pubsub_agent   = "serviceAccount:${google_project_service_identity.agent["pubsub"].email}"
      eventarc_agent = "serviceAccount:${google_project_service_identity.agent["eventarc"].email}"
      deployer       = "serviceAccount:${var.deployer_service_account}"
    },
  )
  default_database = "projects/${var.project_id}/databases/(default)"
}

# ---- Project-wide grants ----

locals {
  project_grants = {
    # The functions' runtime account. Both databases: (default) (jobs, voices, backends,
    # events, the cache) and the keys' own.
    functions_firestore = { who = "functions", role = "roles/datastore.user" }
    functions_trace     = { who = "functions", role = "roles/cloudtrace.agent" }

    # The build account: what Google's documentation asks of a custom build account (logs,
    # the gcf-artifacts images, the sources), the storage part narrowed to Cloud Functions' own
    # gcf-v2-* buckets and this deployment's sources bucket (bucket_grants.build_sources).
    build_logs   = { who = "build", role = "roles/logging.logWriter" }
    build_images = { who = "build", role = "roles/artifactregistry.writer" }
    # The documentation grants storage.objectAdmin on the project "to retrieve the function
    # source and store build images"; the staging buckets Cloud Functions makes are named
    # gcf-v2-sources-* and gcf-v2-uploads-*. If a build still reports a 403 on another bucket,
    # widen this condition (or drop it) rather than the runtime accounts' grants.
    build_staging = {
      who  = "build"
      role = "roles/storage.objectAdmin"
      condition = {
        title       = "gcf-staging-buckets"
        description = "Cloud Functions' own staging buckets only"
        expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")"
      }
    }

    # Eventarc: delivers storage and topic events to the event functions.
    eventarc_receiver = { who = "eventarc", role = "roles/eventarc.eventReceiver" }

    # Storage triggers: Cloud Storage publishes its object events to Pub/Sub as this agent.
    gcs_agent_publisher = { who = "gcs_agent", role = "roles/pubsub.publisher" }

    # The home 4090 worker. The (default) database only: jobs, voices, backends, events, the
    # cache. Not the keys' database, so a stolen worker key can neither read API keys nor write
    # an admin one. (Firestore evaluates IAM conditions on the database's resource name;
    # collections cannot be told apart.)
    home_worker_firestore = {
      who  = "home_worker"
      role = "roles/datastore.user"
      condition = {
        title       = "default-database-only"
        description = "Jobs, voices, backends, events and the cache; never the API keys' database"
        expression  = "resource.name == \"${local.default_database}\""
      }
    }
    home_worker_trace = { who = "home_worker", role = "roles/cloudtrace.agent" }
    # Its log lines (TTS_WORKER__CLOUD_LOGGING): nobody collects a home PC's stderr, and the
    # log-based metrics read its "job ended", "job claimed" and "first audio" lines.
    home_worker_logs = { who = "home_worker", role = "roles/logging.logWriter" }
  }
}

resource "google_project_iam_member" "grant" {
  for_each = local.project_grants
  project  = var.project_id
  role     = each.value.role
  member   = local.member[each.value.who]

  dynamic "condition" {
    for_each = try([each.value.condition], [])
    content {
      title       = condition.value.title
      description = condition.value.description
      expression  = condition.value.expression
    }
  }
}

# Eventarc's own agent needs its agent role before the first trigger can be made; in a new
# project it may not have it yet. Apart from project_grants so that its checkov skip covers it
# alone.
resource "google_project_iam_member" "eventarc_agent" {
  #checkov:skip=CKV_GCP_49:Google's own Eventarc service agent receiving its own agent role (roles/eventarc.serviceAgent), as Google documents for new projects; no user-managed account gains impersonation.
  project = var.project_id
  role    = "roles/eventarc.serviceAgent"
  member  = local.member.eventarc_agent
}

# ---- Grants on buckets (the home worker's prefixes: home_worker_objects, below) ----

locals {
  bucket_grants = {
    functions_data   = { bucket = google_storage_bucket.data.name, who = "functions", role = "roles/storage.objectAdmin" }
    functions_voices = { bucket = google_storage_bucket.voices.name, who = "functions", role = "roles/storage.objectAdmin" }
    # The build account reads the functions' source zips.
    build_sources = { bucket = google_storage_bucket.sources.name, who = "build", role = "roles/storage.objectViewer" }
  }
}

resource "google_storage_bucket_iam_member" "grant" {
  for_each = local.bucket_grants
  bucket   = each.value.bucket
  role     = each.value.role
  member   = local.member[each.value.who]
}

# ---- Grants on the accounts above ----

locals {
  account_grants = merge(
    {
      # V4 signed URLs are signed by IAM signBlob as the runtime account itself (no key file).
      functions_sign_as_self = { account = "functions", who = "functions", role = "roles/iam.serviceAccountTokenCreator" }
      # Authenticated push mints OIDC tokens as the push (and Eventarc) accounts; projects made
      # before April 2021 do not give the agent this by default.
      pubsub_agent_token_push     = { account = "push", who = "pubsub_agent", role = "roles/iam.serviceAccountTokenCreator" }
      pubsub_agent_token_eventarc = { account = "eventarc", who = "pubsub_agent", role = "roles/iam.serviceAccountTokenCreator" }
    },
    # The deployer acts as these accounts (functions run as them, Cloud Build builds as one,
    # Eventarc and Pub/Sub push sign their calls as two), each granted here rather than through
    # a project-wide serviceAccountUser (infra/deployer.sh).
    { for account in ["functions", "build", "push", "eventarc"] : "deployer_act_as_${account}" => {
      account = account
      who     = "deployer"
      role    = "roles/iam.serviceAccountUser"
    } if var.deployer_service_account != "" },
  )
}

resource "google_service_account_iam_member" "grant" {
  for_each           = local.account_grants
  service_account_id = google_service_account.account[each.value.account].name
  role               = each.value.role
  member             = local.member[each.value.who]
}

# ---- Grants per topology entry, by who is granted ----

# The functions' runtime account: the secrets they mount, the topics they publish to.
resource "google_secret_manager_secret_iam_member" "functions_secret" {
  for_each  = local.secrets
  secret_id = google_secret_manager_secret.secret[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.member.functions
}

resource "google_pubsub_topic_iam_member" "functions_publish" {
  for_each = local.functions_publish_to
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = local.member.functions
}

# Reply topics are the operator's, named in var.reply_topics; announcing a result publishes there.
resource "google_pubsub_topic_iam_member" "reply_publish" {
  for_each = { for pair in setproduct(var.reply_topics, ["functions", "home_worker"]) : "${pair[0]}/${pair[1]}" => pair }
  topic    = "projects/${var.project_id}/topics/${each.value[0]}"
  role     = "roles/pubsub.publisher"
  member   = local.member[each.value[1]]
}

# Pub/Sub push: may call the functions subscriptions push to, nothing else.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.pushed_functions
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = local.member.push
}

# Eventarc: delivers storage and topic events to the event functions.
resource "google_cloud_run_v2_service_iam_member" "eventarc_invoker" {
  for_each = local.event_functions
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = local.member.eventarc
}

# Public HTTP functions: deliberately open. The API checks its own keys on every route but
# health and the RunPod webhook a per-job HMAC token; neither caller holds a Google identity.
# Organisations that restrict policy members to their domains (iam.allowedPolicyMemberDomains)
# refuse `allUsers`: either make that policy's exception for this project, or set
# var.public_invoker = "none" and turn Cloud Run's invoker check off (README, Deploying).
resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  for_each = var.public_invoker == "allUsers" ? local.public_functions : {}
  location = local.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Dead letters: Pub/Sub forwards as its agent, which must publish to the dead-letter topic and
# subscribe to (acknowledge on) the source subscription, or nothing is ever dead-lettered.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter" {
  for_each = local.dead_letter_topics
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = local.member.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_source" {
  for_each     = local.dead_lettered
  subscription = google_pubsub_subscription.subscription[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.member.pubsub_agent
}

# The home 4090 worker: its subscription, jobs and results.
resource "google_pubsub_subscription_iam_member" "home_worker_pull" {
  for_each     = local.home_worker_pulls_from
  subscription = google_pubsub_subscription.subscription[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.member.home_worker
}

# tts-results (announcements) and tts-jobs (the join job it makes when it finishes the last
# item of a joined batch): topology.yaml's publishers.
resource "google_pubsub_topic_iam_member" "home_worker_publish" {
  for_each = local.home_worker_publishes_to
  topic    = google_pubsub_topic.topic[each.key].id
  role     = "roles/pubsub.publisher"
  member   = local.member.home_worker
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
  member   = local.member.home_worker
  condition {
    title       = "prefix-${each.key}"
    description = "Objects under ${each.value.prefix} only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${each.value.bucket}/objects/${each.value.prefix}\")"
  }
}

# No access to the webhook signing key: the worker never calls back (it sits on the home
# network, where a caller's URL must never reach); the monitor sends its jobs' webhooks.

# New service agents and IAM grants take minutes to be seen everywhere; a first apply that
# builds functions and makes triggers at once fails on them ("permission denied" for the build
# account, Eventarc's agent or the storage agent). The functions wait this long after all of
# them on the first apply; later applies do not wait (nothing here changes).
resource "time_sleep" "grants_propagate" {
  create_duration = "120s"

  depends_on = [
    google_project_iam_member.grant,
    google_project_iam_member.eventarc_agent,
    google_storage_bucket_iam_member.grant,
    google_service_account_iam_member.grant,
    google_secret_manager_secret_iam_member.functions_secret,
  ]
}

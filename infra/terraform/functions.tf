# Every function in topology.yaml, from the folder `python -m infra stage` made for it.
resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:Ingress is internal-only for every function but the two public ones (the API and the RunPod webhook, reached from the internet and checking their own API keys or per-job tokens); checkov cannot resolve the per-function conditional below.
  for_each = local.functions
  name     = each.key
  location = local.region

  build_config {
    runtime     = "python311"
    entry_point = each.value.entry_point
    # Named, or new projects build with the Compute Engine default account, which organisations
    # with the default-grants policy leave without roles: every build would fail (iam.tf).
    service_account = google_service_account.account["build"].id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_source[each.key].name
        # Set from the object: left to the provider, it resends the old generation once the
        # object changes. (The object's `generation` attribute is the provider's, 5.x and 6.x.)
        generation = google_storage_bucket_object.function_source[each.key].generation
      }
    }
  }

  service_config {
    service_account_email = google_service_account.account["functions"].email
    available_memory      = each.value.memory
    available_cpu         = each.value.cpu
    timeout_seconds       = each.value.timeout_s
    max_instance_count    = var.max_instances
    # Concurrent requests per instance; functions-framework serves that many threads.
    max_instance_request_concurrency = each.value.concurrency
    # Public ones (the API, the RunPod webhook) take calls from anywhere and check their own
    # credentials; the rest are reached only by Pub/Sub push and Eventarc, which count as
    # internal traffic of the project only on the run.app URL (service_config[0].uri, what the
    # push subscriptions call), and still need run.invoker (iam.tf).
    ingress_settings               = each.value.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true

    environment_variables = merge(local.environment, { THREADS = tostring(each.value.concurrency) })

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  # Storage events come from the voices bucket, in the function's own region: a trigger filters
  # by bucket only, so audio and uploads never wake these functions. Topic ticks from Pub/Sub.
  dynamic "event_trigger" {
    for_each = each.value.trigger_kind == "storage" ? [each.value] : []
    content {
      trigger_region        = local.region
      event_type            = "google.cloud.storage.object.v1.${event_trigger.value.trigger_target}"
      retry_policy          = event_trigger.value.retry ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.account["eventarc"].email
      event_filters {
        attribute = "bucket"
        value     = google_storage_bucket.voices.name
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.trigger_kind == "topic" ? [each.value] : []
    content {
      trigger_region        = local.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = google_pubsub_topic.topic[event_trigger.value.trigger_target].id
      retry_policy          = event_trigger.value.retry ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.account["eventarc"].email
    }
  }

  depends_on = [
    google_project_service.api,
    # A function that mounts a secret fails to deploy until its account can read it; storage
    # triggers fail until the storage agent can publish and Eventarc's agent holds its role;
    # builds fail until the build account holds its roles. New agents and grants take a while
    # to take effect everywhere: the wait follows them all (iam.tf).
    time_sleep.grants_propagate,
  ]
}

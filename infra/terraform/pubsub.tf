resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Messages carry job ids and signed requests, no audio or keys; Google-managed encryption is enough and a CMEK would add a KMS key to run.
  for_each = local.topics
  name     = each.key

  depends_on = [google_project_service.api]
}

resource "google_pubsub_subscription" "subscription" {
  for_each = local.subscriptions
  name     = each.key
  topic    = google_pubsub_topic.topic[each.value.topic].id
  filter   = each.value.filter

  ack_deadline_seconds       = each.value.ack_deadline_s
  message_retention_duration = "${each.value.message_retention_s}s"

  # Never expire: a worker offline for a month must find its subscription (and jobs) waiting.
  expiration_policy {
    ttl = ""
  }

  dynamic "dead_letter_policy" {
    for_each = each.value.dead_letter == null ? [] : [each.value.dead_letter]
    content {
      dead_letter_topic     = google_pubsub_topic.topic[dead_letter_policy.value.topic].id
      max_delivery_attempts = dead_letter_policy.value.max_delivery_attempts
    }
  }

  dynamic "retry_policy" {
    for_each = each.value.retry == null ? [] : [each.value.retry]
    content {
      minimum_backoff = "${retry_policy.value.minimum_backoff_s}s"
      maximum_backoff = "${retry_policy.value.maximum_backoff_s}s"
    }
  }

  # Push to a declared function, authenticated with an OIDC token of the push account (the
  # function is private: only run.invoker holders get in). Its run.app URL: the function takes
  # internal traffic only, and Pub/Sub counts as internal only there, never on the
  # cloudfunctions.net URL (`url`), which would answer every push 404/403.
  dynamic "push_config" {
    for_each = each.value.push_function == null ? [] : [each.value.push_function]
    content {
      push_endpoint = google_cloudfunctions2_function.function[push_config.value].service_config[0].uri
      oidc_token {
        service_account_email = google_service_account.account["push"].email
        audience              = google_cloudfunctions2_function.function[push_config.value].service_config[0].uri
      }
    }
  }

  # Pushing as the push account needs act-as on it, granted with the functions' wait.
  depends_on = [time_sleep.grants_propagate]
}

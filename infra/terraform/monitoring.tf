# Operating it: log-based metrics from the structured lines the code already writes (shared/logs.py
# JSON on stderr, parsed by Cloud Logging into jsonPayload; the home worker sends its own with
# TTS_WORKER__CLOUD_LOGGING), a dashboard, an availability SLO on the API, and alert policies.
# README, "Operating it", says what each alert means and what to do. Every message and field
# named here is checked against the code by tests/unit/test_terraform.py.

locals {
  # Counters: one per matching line, labelled by what the line says.
  log_counters = {
    jobs_ended = {
      description = "Jobs that ended, by mode, backend, outcome and error code (\"job ended\": one per job, wherever it ends)."
      filter      = "jsonPayload.message=\"job ended\""
      labels      = ["mode", "backend", "outcome", "code"]
    }
    intake_dead_letters = {
      description = "Intake messages that could not become a job, dead-lettered with the reason (code)."
      filter      = "jsonPayload.message=\"intake message dead-lettered\""
      labels      = ["code"]
    }
    webhook_failures = {
      description = "Webhook deliveries that failed (each is tried again by the monitor), by event and code."
      filter      = "jsonPayload.message=\"webhook not delivered\""
      labels      = ["event", "code"]
    }
    announcement_failures = {
      description = "Results not published yet (the monitor publishes them again) and reply topics that failed or were given up."
      filter      = "jsonPayload.message=(\"result not announced yet\" OR \"reply topic failed, tried again later\" OR \"reply topic given up\")"
      labels      = ["message"]
    }
    backend_health = {
      description = "Backend health changes the monitor saw (online, offline, unhealthy, rerouted ...), by backend."
      filter      = "jsonPayload.message=\"backend health\""
      labels      = ["event", "backend"]
    }
    backend_down = {
      description = "Monitor passes (one a minute) that found a backend down: a backend's minutes down."
      filter      = "jsonPayload.message=\"backend state\" AND jsonPayload.up=false"
      labels      = ["backend"]
    }
    monitor_passes = {
      description = "Monitor passes that ran (one a minute, Cloud Scheduler)."
      filter      = "jsonPayload.message=\"monitor pass\""
      labels      = []
    }
  }

  # Distributions: the value of one field of the lines that carry it, in seconds or a ratio.
  log_distributions = {
    queue_age = {
      description = "Seconds from a job's submission to the claim that ran it (\"job ended\" lines)."
      filter      = "jsonPayload.message=\"job ended\" AND jsonPayload.queue_s:*"
      field       = "queue_s"
      unit        = "s"
      labels      = ["mode", "backend"]
      scale       = 0.05 # first bucket 50 ms, doubling: up to ~7 hours
      growth      = 2
    }
    time_to_first_audio = {
      description = "Seconds from a job's submission to its first audio: a streamed job's first piece (\"first audio\"), else its end."
      filter      = "jsonPayload.ttfa_s:*"
      field       = "ttfa_s"
      unit        = "s"
      labels      = ["mode", "backend"]
      scale       = 0.05
      growth      = 2
    }
    real_time_factor = {
      description = "Seconds of work per second of audio (run_s / audio_s): under 1 is faster than real time."
      filter      = "jsonPayload.message=\"job ended\" AND jsonPayload.rtf:*"
      field       = "rtf"
      unit        = "1"
      labels      = ["mode", "backend"]
      scale       = 0.02
      growth      = 1.4
    }
  }

  metric_prefix = "logging.googleapis.com/user/"
  # local.backend_queues, local.dead_letter_audits, local.api_function: topology.tf.

  alert_channels = [for c in google_monitoring_notification_channel.email : c.id]
  runbook        = "README.md, \"Operating it\""
}

resource "google_logging_metric" "counter" {
  for_each = local.log_counters
  name     = "tts/${each.key}"
  filter   = each.value.filter
  # Lines of the home worker (generic_node) and of the functions (cloud_run_revision) alike.
  description = each.value.description

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.value
        value_type = "STRING"
      }
    }
  }
  label_extractors = { for label in each.value.labels : label => "EXTRACT(jsonPayload.${label})" }

  depends_on = [google_project_service.api]
}

resource "google_logging_metric" "distribution" {
  for_each        = local.log_distributions
  name            = "tts/${each.key}"
  filter          = each.value.filter
  description     = each.value.description
  value_extractor = "EXTRACT(jsonPayload.${each.value.field})"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = each.value.unit
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.value
        value_type = "STRING"
      }
    }
  }
  label_extractors = { for label in each.value.labels : label => "EXTRACT(jsonPayload.${label})" }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = each.value.growth
      scale              = each.value.scale
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.alert_emails)
  display_name = "TTS alerts: ${each.key}"
  type         = "email"
  labels = {
    email_address = each.key
  }
  depends_on = [google_project_service.api]
}

# ---- The API's availability: 99.9 % of requests not answered 5xx, over 28 days ----

resource "google_monitoring_custom_service" "api" {
  service_id   = "tts-gateway-api"
  display_name = "TTS gateway API (${local.api_function})"
  depends_on   = [google_project_service.api]
}

resource "google_monitoring_slo" "api_availability" {
  service             = google_monitoring_custom_service.api.service_id
  slo_id              = "availability"
  display_name        = "99.9 % of API requests are not server errors (28 days)"
  goal                = 0.999
  rolling_period_days = 28

  request_based_sli {
    good_total_ratio {
      total_service_filter = join(" AND ", [
        "metric.type=\"run.googleapis.com/request_count\"",
        "resource.type=\"cloud_run_revision\"",
        "resource.labels.service_name=\"${local.api_function}\"",
      ])
      bad_service_filter = join(" AND ", [
        "metric.type=\"run.googleapis.com/request_count\"",
        "resource.type=\"cloud_run_revision\"",
        "resource.labels.service_name=\"${local.api_function}\"",
        "metric.labels.response_code_class=\"5xx\"",
      ])
    }
  }
}

# Burn-rate alerts, the multi-window pairs of Google's SRE workbook: fast (2 % of the 28-day
# budget in an hour: 14.4x over 1 h, confirmed over 5 min) and slow (5 % in six hours: 6x over
# 6 h, confirmed over 30 min).
locals {
  burn_alerts = {
    fast = { long = "3600s", short = "300s", rate = 14.4, what = "2 % of the month's error budget in an hour" }
    slow = { long = "21600s", short = "1800s", rate = 6, what = "5 % of the month's error budget in six hours" }
  }
}

resource "google_monitoring_alert_policy" "api_burn" {
  for_each     = local.burn_alerts
  display_name = "TTS API availability: error budget burning ${each.key} (${each.value.rate}x)"
  combiner     = "AND"

  dynamic "conditions" {
    for_each = toset([each.value.long, each.value.short])
    content {
      display_name = "burn rate over ${conditions.value} above ${each.value.rate}"
      condition_threshold {
        filter          = "select_slo_burn_rate(\"${google_monitoring_slo.api_availability.name}\", \"${conditions.value}\")"
        comparison      = "COMPARISON_GT"
        threshold_value = each.value.rate
        duration        = "0s"
      }
    }
  }

  notification_channels = local.alert_channels
  documentation {
    mime_type = "text/markdown"
    content   = "The API answers server errors fast enough to spend ${each.value.what}. See ${local.runbook}: API availability."
  }
}

# ---- Jobs wait: the 95th percentile of queue_s over 10 minutes, per backend ----

resource "google_monitoring_alert_policy" "queue_age" {
  display_name = "TTS: jobs wait more than ${var.queue_age_alert_s} s for a worker"
  combiner     = "OR"

  conditions {
    display_name = "p95 queue age above ${var.queue_age_alert_s} s"
    condition_threshold {
      # No resource.type: the lines come from the home worker (generic_node) and from the
      # functions (cloud_run_revision). If the API insists on one, split this condition in two.
      filter          = "metric.type=\"${local.metric_prefix}${google_logging_metric.distribution["queue_age"].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.queue_age_alert_s
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
        group_by_fields      = ["metric.label.backend"]
      }
    }
  }

  notification_channels = local.alert_channels
  documentation {
    mime_type = "text/markdown"
    content   = "Jobs wait too long between submission and a worker's claim. See ${local.runbook}: queue age."
  }
}

# ---- Dead letters: anything in a dead-letter topic's audit subscription ----

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name = "TTS: messages in a dead-letter subscription"
  combiner     = "OR"

  dynamic "conditions" {
    for_each = local.dead_letter_audits
    content {
      display_name = "${conditions.value} holds messages"
      condition_threshold {
        filter = join(" AND ", [
          "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
          "resource.type=\"pubsub_subscription\"",
          "resource.labels.subscription_id=\"${conditions.value}\"",
        ])
        comparison      = "COMPARISON_GT"
        threshold_value = 0
        duration        = "300s"
        aggregations {
          alignment_period   = "300s"
          per_series_aligner = "ALIGN_MAX"
        }
      }
    }
  }

  notification_channels = local.alert_channels
  documentation {
    mime_type = "text/markdown"
    content   = "A job message Pub/Sub gave up on, or an intake message that cannot become a job, is waiting to be looked at. See ${local.runbook}: dead letters."
  }
}

# ---- A backend down for longer than var.backend_down_minutes ----

resource "google_monitoring_alert_policy" "backend_down" {
  display_name = "TTS: a backend is down for more than ${var.backend_down_minutes} minutes"
  combiner     = "OR"

  conditions {
    display_name = "monitor passes finding the backend down, every minute for ${var.backend_down_minutes} minutes"
    condition_threshold {
      filter = join(" AND ", [
        "metric.type=\"${local.metric_prefix}${google_logging_metric.counter["backend_down"].name}\"",
        "resource.type=\"cloud_run_revision\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.backend_down_minutes * 60}s"
      aggregations {
        alignment_period     = "120s" # a pass a minute: two chances per window
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.backend"]
      }
    }
  }

  notification_channels = local.alert_channels
  documentation {
    mime_type = "text/markdown"
    content   = "A backend has not been up (fresh heartbeat, or RunPod's /health answering) for ${var.backend_down_minutes} minutes; its new jobs go to the next backend. See ${local.runbook}: backend down."
  }
}

# ---- The monitor stopped running: no "monitor pass" line for 5 minutes ----

resource "google_monitoring_alert_policy" "monitor_silent" {
  display_name = "TTS: the monitor has not run for 5 minutes"
  combiner     = "OR"

  conditions {
    display_name = "no monitor pass for 5 minutes"
    condition_absent {
      filter = join(" AND ", [
        "metric.type=\"${local.metric_prefix}${google_logging_metric.counter["monitor_passes"].name}\"",
        "resource.type=\"cloud_run_revision\"",
      ])
      duration = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = local.alert_channels
  documentation {
    mime_type = "text/markdown"
    content   = "Nothing is failing over, requeuing expired leases, polling RunPod, re-sending webhooks or re-announcing results. See ${local.runbook}: monitor silent."
  }
}

# ---- One dashboard ----

locals {
  dashboard_tiles = [
    { title = "Jobs ended by outcome", metric = "counter/jobs_ended", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.outcome"] },
    { title = "Jobs ended by mode", metric = "counter/jobs_ended", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.mode"] },
    { title = "Jobs ended by backend", metric = "counter/jobs_ended", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.backend"] },
    { title = "Queue age p95 (s)", metric = "distribution/queue_age", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_95", by = ["metric.label.backend"] },
    { title = "Time to first audio p50 (s)", metric = "distribution/time_to_first_audio", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_50", by = ["metric.label.mode"] },
    { title = "Time to first audio p95 (s)", metric = "distribution/time_to_first_audio", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_95", by = ["metric.label.mode"] },
    { title = "Real-time factor p50 (work s per audio s)", metric = "distribution/real_time_factor", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_50", by = ["metric.label.backend"] },
    { title = "Intake dead letters by code", metric = "counter/intake_dead_letters", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.code"] },
    { title = "Webhook failures by event", metric = "counter/webhook_failures", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.event"] },
    { title = "Announcement failures", metric = "counter/announcement_failures", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", by = ["metric.label.message"] },
    { title = "Backend down (monitor passes)", metric = "counter/backend_down", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", by = ["metric.label.backend"] },
    { title = "Backend health changes", metric = "counter/backend_health", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", by = ["metric.label.event", "metric.label.backend"] },
  ]
  metric_names = merge(
    { for k, m in google_logging_metric.counter : "counter/${k}" => m.name },
    { for k, m in google_logging_metric.distribution : "distribution/${k}" => m.name },
  )
  log_tiles = [for t in local.dashboard_tiles : {
    title = t.title
    xyChart = {
      dataSets = [{
        plotType = "LINE"
        timeSeriesQuery = {
          timeSeriesFilter = {
            filter = "metric.type=\"${local.metric_prefix}${local.metric_names[t.metric]}\""
            aggregation = {
              alignmentPeriod    = "300s"
              perSeriesAligner   = t.aligner
              crossSeriesReducer = t.reducer
              groupByFields      = t.by
            }
          }
        }
      }]
    }
  }]
  platform_tiles = [
    {
      title = "API requests by response class"
      xyChart = { dataSets = [{ plotType = "STACKED_BAR", timeSeriesQuery = { timeSeriesFilter = {
        filter      = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.api_function}\""
        aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_RATE", crossSeriesReducer = "REDUCE_SUM", groupByFields = ["metric.label.response_code_class"] }
      } } }] }
    },
    {
      title = "Oldest unacknowledged job message (s)"
      xyChart = { dataSets = [for q in local.backend_queues : { plotType = "LINE", timeSeriesQuery = { timeSeriesFilter = {
        filter      = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${q}\""
        aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_MAX" }
      } } }] }
    },
    {
      title = "Dead-letter backlog (messages)"
      xyChart = { dataSets = [for q in local.dead_letter_audits : { plotType = "LINE", timeSeriesQuery = { timeSeriesFilter = {
        filter      = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${q}\""
        aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_MAX" }
      } } }] }
    },
  ]
}

resource "google_monitoring_dashboard" "gateway" {
  dashboard_json = jsonencode({
    displayName = "TTS gateway"
    mosaicLayout = {
      columns = 12
      tiles = [for i, widget in concat(local.platform_tiles, local.log_tiles) : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = widget
      }]
    }
  })
  depends_on = [google_project_service.api]
}

# Each schedule publishes a tick to its topic; the topic-triggered function (the monitor) runs.
# A Pub/Sub target needs no OIDC token: Cloud Scheduler publishes as its own service agent.
resource "google_cloud_scheduler_job" "schedule" {
  for_each  = local.schedules
  name      = each.key
  region    = local.region
  schedule  = each.value.cron
  time_zone = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.topic[each.value.topic].id
    data       = base64encode("tick")
  }

  depends_on = [google_project_service.api]
}

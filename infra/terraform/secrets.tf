# The containers only. Their values never pass through Terraform (or its state): an operator adds
# them out of band, e.g.
#   printf %s "$VALUE" | gcloud secrets versions add runpod-api-key --data-file=-
# Every secret any function in topology.yaml mounts is created here.
resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  secret_id = each.key

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

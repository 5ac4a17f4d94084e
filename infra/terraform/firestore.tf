resource "google_firestore_database" "default" {
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  # `terraform destroy` forgets the database instead of deleting every job and voice.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.api]
}

# API keys (admin ones included) and the intake's signatures: a database of their own, because
# Firestore's IAM conditions tell databases apart but not collections. The functions' account
# reaches both; the home worker's only (default) (iam.tf), so a stolen worker key can neither
# read keys nor mint an admin one.
resource "google_firestore_database" "keys" {
  name        = local.keys_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.api]
}

# Firestore deletes jobs, events, cache entries and intake signatures once `expires_at` passes
# (Settings.retention, Settings.intake). The field is only ever compared by TTL, so its
# single-field indexes are turned off (they would only cost writes and hotspot on
# monotonically increasing timestamps).
resource "google_firestore_field" "ttl" {
  for_each   = local.ttl_fields
  database   = each.value.database == "keys" ? google_firestore_database.keys.name : google_firestore_database.default.name
  collection = each.value.collection
  field      = each.value.field

  ttl_config {}
  index_config {}
}

resource "google_firestore_index" "composite" {
  for_each   = local.indexes
  database   = google_firestore_database.default.name
  collection = each.value.collection

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.path
      order        = try(fields.value.array, false) ? null : "ASCENDING"
      array_config = try(fields.value.array, false) ? "CONTAINS" : null
    }
  }
}

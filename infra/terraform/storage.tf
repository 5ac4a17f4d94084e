# Audio, stream pieces and uploads. Soft delete as the yaml says (0: off), so audio the lifecycle
# deletes is gone, not billed seven more days.
resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:Access logs of every audio read would cost more than they tell; Cloud Audit Logs cover admin access.
  #checkov:skip=CKV_GCP_78:No versioning: objects expire by lifecycle (retention), and a kept noncurrent version would outlive it; the registry dedupes on generation instead.
  name                        = var.bucket_name
  location                    = local.topology.bucket.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  dynamic "soft_delete_policy" {
    for_each = try(local.topology.bucket.soft_delete_days, null) == null ? [] : [local.topology.bucket.soft_delete_days]
    content {
      retention_duration_seconds = soft_delete_policy.value * 86400
    }
  }

  dynamic "lifecycle_rule" {
    for_each = local.topology.bucket.expire
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value.age_days
        matches_prefix = [lifecycle_rule.value.prefix]
      }
    }
  }

  depends_on = [google_project_service.api]
}

# Voice prompt files and the quarantined ones, in the functions' region: storage triggers must be
# where their bucket is, and they watch this bucket only.
resource "google_storage_bucket" "voices" {
  #checkov:skip=CKV_GCP_62:Voice files are read by the worker and the registry only; Cloud Audit Logs cover admin access.
  #checkov:skip=CKV_GCP_78:The registry dedupes on generation and a deleted voice stays restorable through soft delete; versioning would keep every overwritten prompt forever.
  name                        = local.voices_bucket_name
  location                    = local.topology.bucket.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  dynamic "soft_delete_policy" {
    for_each = try(local.topology.voices_bucket.soft_delete_days, null) == null ? [] : [local.topology.voices_bucket.soft_delete_days]
    content {
      retention_duration_seconds = soft_delete_policy.value * 86400
    }
  }

  depends_on = [google_project_service.api]
}

# The functions' source zips, named by content hash: an unchanged source is the same object,
# so a second apply uploads and redeploys nothing.
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Only Terraform and Cloud Build read these zips; access logs would add nothing.
  #checkov:skip=CKV_GCP_78:Each zip's name is its content hash, so an object is never overwritten: versioning would keep nothing new.
  name                        = "${var.project_id}-tts-function-sources"
  location                    = local.topology.bucket.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  depends_on = [google_project_service.api]
}

data "archive_file" "function" {
  for_each         = local.functions
  type             = "zip"
  source_dir       = "${path.root}/${var.staged_dir}/${each.key}"
  output_path      = "${path.root}/.build/${each.key}.zip"
  output_file_mode = "0644" # the zip's bytes then depend on the content only
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.functions
  bucket   = google_storage_bucket.sources.name
  name     = "${each.key}/${data.archive_file.function[each.key].output_md5}.zip"
  source   = data.archive_file.function[each.key].output_path
}

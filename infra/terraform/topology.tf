# Everything the gateway is made of comes from infra/topology.yaml (the same file the emulator
# bootstrap and the staging read): resources below iterate over these maps, never over names
# written here. Defaults mirror infra/topology.py's models (a unit test keeps them equal).
locals {
  topology = yamldecode(file("${path.module}/../topology.yaml"))

  # Storage triggers must live in the bucket's region, so the bucket's location is the region.
  region = lower(local.topology.bucket.location)

  topics = { for t in local.topology.topics : t.name => {
    publishers = try(t.publishers, [])
  } }

  subscriptions = { for s in local.topology.subscriptions : s.name => {
    topic               = s.topic
    filter              = try(s.filter, "")
    ack_deadline_s      = try(s.ack_deadline_s, 60)
    message_retention_s = try(s.message_retention_s, 604800)
    dead_letter         = try(s.dead_letter, null)
    retry               = try(s.retry, null)
    push_function       = try(s.push_function, null)
    subscribers         = try(s.subscribers, [])
  } }

  functions = { for f in local.topology.functions : f.name => {
    entry_point    = f.entry_point
    trigger_kind   = split(":", f.trigger)[0]
    trigger_target = try(split(":", f.trigger)[1], "")
    memory         = try(f.memory, "512Mi")
    cpu            = try(f.cpu, null)
    concurrency    = try(f.concurrency, 1)
    timeout_s      = try(f.timeout_s, 60)
    retry          = try(f.retry, false)
    secrets        = try(f.secrets, {})
    public         = try(f.public, false)
  } }

  schedules = { for s in try(local.topology.schedules, []) : s.name => s }

  # The voice files' own bucket: storage triggers filter by bucket only, so only its objects
  # (voice-prompts/, quarantine/) wake the voice-registry functions.
  voices_bucket_name = var.voices_bucket_name != "" ? var.voices_bucket_name : "${var.bucket_name}-voices"

  # Firestore: API keys and intake signatures in a database of their own (the home worker's
  # account is granted only the default one); TTL policies and composite indexes, keyed so a
  # reorder changes nothing.
  keys_database = try(local.topology.firestore.keys_database, "(default)")
  ttl_fields = { for t in try(local.topology.firestore.ttl, []) : "${t.collection}.${t.field}" => {
    collection = t.collection
    field      = t.field
    database   = try(t.database, "default")
  } }
  indexes = { for i in try(local.topology.firestore.indexes, []) :
    "${i.collection}:${join(",", [for f in i.fields : f.path])}" => i
  }

  # Derived sets the IAM grants iterate over.
  secrets                  = toset(flatten([for f in local.functions : values(f.secrets)]))
  http_functions           = { for k, f in local.functions : k => f if f.trigger_kind == "http" }
  public_functions         = { for k, f in local.http_functions : k => f if f.public }
  event_functions          = { for k, f in local.functions : k => f if f.trigger_kind != "http" }
  pushed_functions         = toset(compact([for s in local.subscriptions : s.push_function == null ? "" : s.push_function]))
  dead_lettered            = { for k, s in local.subscriptions : k => s if s.dead_letter != null }
  dead_letter_topics       = toset([for s in local.dead_lettered : s.dead_letter.topic])
  functions_publish_to     = toset([for k, t in local.topics : k if contains(t.publishers, "functions")])
  home_worker_publishes_to = toset([for k, t in local.topics : k if contains(t.publishers, "home-worker")])
  home_worker_pulls_from   = toset([for k, s in local.subscriptions : k if contains(s.subscribers, "home-worker")])

  # What monitoring.tf watches, found by what it is, never by name: the per-backend job
  # subscriptions (the router's `attributes.backend` filter), the dead-letter topics' audit
  # subscriptions (unfiltered; the replay subscription's filter keeps it out), the API.
  backend_queues     = toset([for k, s in local.subscriptions : k if startswith(s.filter, "attributes.backend")])
  dead_letter_audits = toset([for k, s in local.subscriptions : k if contains(local.dead_letter_topics, s.topic) && s.filter == ""])
  api_function       = one([for k, f in local.functions : k if f.entry_point == "api"])

  # The audio lifecycle rule is the retention the cache relies on (Settings.retention).
  audio_days = one([for r in local.topology.bucket.expire : r.age_days if r.prefix == "audio/"])

  webhook_function   = one([for k, f in local.functions : k if f.entry_point == "runpod_webhook"])
  runpod_webhook_url = var.runpod_webhook_url != "" ? var.runpod_webhook_url : "https://${local.region}-${var.project_id}.cloudfunctions.net/${local.webhook_function}"

  # The home 4090 first; RunPod joins once its endpoint exists (TTS_BACKENDS).
  backends = concat(
    [{ id = "home-4090", kind = "home_gpu", priority = 10 }],
    var.runpod_endpoint_id == "" ? [] : [{ id = "runpod", kind = "runpod", priority = 20 }],
  )

  environment = merge(
    {
      TTS_PROJECT_ID            = var.project_id
      TTS_BUCKET                = var.bucket_name
      TTS_VOICES__BUCKET        = local.voices_bucket_name
      TTS_KEYS_DATABASE         = local.keys_database
      TTS_TRACING__EXPORTER     = "gcp"
      TTS_TRACING__SAMPLE_RATIO = tostring(var.trace_sample_ratio)
      TTS_BACKENDS              = jsonencode(local.backends)
      TTS_REPLY_TOPICS          = jsonencode(var.reply_topics)
      TTS_RETENTION__AUDIO_DAYS = tostring(local.audio_days)
      TTS_RUNPOD__ENDPOINT_ID   = var.runpod_endpoint_id
      TTS_RUNPOD__WEBHOOK_URL   = var.runpod_endpoint_id == "" ? "" : local.runpod_webhook_url
    },
    var.environment,
  )
}

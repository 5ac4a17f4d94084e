variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "bucket_name" {
  description = "The audio and uploads bucket (TTS_BUCKET); globally unique."
  type        = string
}

variable "voices_bucket_name" {
  description = "The voice files' bucket (TTS_VOICES__BUCKET), the only one storage triggers watch; empty: \"<bucket_name>-voices\"."
  type        = string
  default     = ""
}

variable "firestore_location" {
  description = "Where the Firestore (default) database lives; fixed once created."
  type        = string
  default     = "nam5"
}

variable "staged_dir" {
  description = "Where `python -m infra stage --out` put one source folder per function."
  type        = string
  default     = "../../.build/functions"
}

variable "runpod_endpoint_id" {
  description = "RunPod serverless endpoint id; empty leaves RunPod off. Written by `python -m infra runpod deploy`."
  type        = string
  default     = ""
}

variable "runpod_webhook_url" {
  description = "The URL RunPod calls back; empty: the deployed webhook function's own URL."
  type        = string
  default     = ""
}

variable "reply_topics" {
  description = "Topics (in this project) the gateway may publish replies to (TTS_REPLY_TOPICS): the most an admin may record on a key, whose own list decides what its requests may name."
  type        = list(string)
  default     = []
}

variable "environment" {
  description = "Further TTS_* settings for every function (see README, Configuration)."
  type        = map(string)
  default     = {}
}

variable "max_instances" {
  description = "The most instances any one function may scale to."
  type        = number
  default     = 20
}

variable "public_invoker" {
  description = "How the public functions (the API, the RunPod webhook) let anyone call them: \"allUsers\" (an IAM grant; refused where the organisation restricts policy members to its domains) or \"none\" (no grant: turn Cloud Run's invoker check off instead, see README, Deploying)."
  type        = string
  default     = "allUsers"
  validation {
    condition     = contains(["allUsers", "none"], var.public_invoker)
    error_message = "public_invoker is \"allUsers\" or \"none\"."
  }
}

variable "alert_emails" {
  description = "Who the alert policies notify by e-mail (monitoring.tf); empty: the alerts open incidents in the console only."
  type        = list(string)
  default     = []
}

variable "backend_down_minutes" {
  description = "How long a backend may be down (the monitor's health line says offline) before its alert fires."
  type        = number
  default     = 10
}

variable "queue_age_alert_s" {
  description = "The oldest unacknowledged job message, in seconds, past which the queue-age alert fires."
  type        = number
  default     = 300
}

variable "trace_sample_ratio" {
  description = "The share of API requests traced (TTS_TRACING__SAMPLE_RATIO); a job's trace follows its request's decision across Pub/Sub."
  type        = number
  default     = 0.1
}

variable "deployer_service_account" {
  description = "The deployer's e-mail (infra/deployer.sh: tts-deployer@PROJECT.iam.gserviceaccount.com): it is granted act-as on each account Terraform deploys functions, triggers and push subscriptions as, instead of a project-wide serviceAccountUser. Empty: whoever applies already may act as them (e.g. an Owner)."
  type        = string
  default     = ""
}

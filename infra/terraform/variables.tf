variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "bucket_name" {
  description = "The voices, uploads and audio bucket (TTS_BUCKET); globally unique."
  type        = string
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

terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    # Only for google_project_service_identity (the Pub/Sub service agent), which the GA
    # provider does not have.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
    # time_sleep: new service agents and IAM grants take a while to take effect everywhere;
    # the functions wait for them on the first apply (iam.tf).
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }

  # Partial configuration: the state bucket is per deployment, so it is given at init time:
  #   terraform init -backend-config="bucket=PROJECT-tfstate" -backend-config="prefix=tts"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = local.region
}

provider "google-beta" {
  project = var.project_id
  region  = local.region
}

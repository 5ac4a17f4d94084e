# Where iam.tf's resources stood before each family became one resource over a map (Terraform
# 1.1+ moves them in the state on the next plan: nothing is destroyed or made again). Moved
# blocks cannot iterate, hence one each. Remove them once every deployment's state has been
# applied with them; a moved block whose old address is not in a state does nothing.

moved {
  from = google_service_account.functions
  to   = google_service_account.account["functions"]
}

moved {
  from = google_service_account.build
  to   = google_service_account.account["build"]
}

moved {
  from = google_service_account.push
  to   = google_service_account.account["push"]
}

moved {
  from = google_service_account.eventarc
  to   = google_service_account.account["eventarc"]
}

moved {
  from = google_service_account.home_worker
  to   = google_service_account.account["home_worker"]
}

moved {
  from = google_project_service_identity.pubsub
  to   = google_project_service_identity.agent["pubsub"]
}

moved {
  from = google_project_service_identity.eventarc
  to   = google_project_service_identity.agent["eventarc"]
}

moved {
  from = google_project_iam_member.functions_firestore
  to   = google_project_iam_member.grant["functions_firestore"]
}

moved {
  from = google_project_iam_member.functions_trace
  to   = google_project_iam_member.grant["functions_trace"]
}

moved {
  from = google_project_iam_member.build_logs
  to   = google_project_iam_member.grant["build_logs"]
}

moved {
  from = google_project_iam_member.build_images
  to   = google_project_iam_member.grant["build_images"]
}

moved {
  from = google_project_iam_member.build_staging
  to   = google_project_iam_member.grant["build_staging"]
}

moved {
  from = google_project_iam_member.eventarc_receiver
  to   = google_project_iam_member.grant["eventarc_receiver"]
}

moved {
  from = google_project_iam_member.gcs_agent_publisher
  to   = google_project_iam_member.grant["gcs_agent_publisher"]
}

moved {
  from = google_project_iam_member.home_worker_firestore
  to   = google_project_iam_member.grant["home_worker_firestore"]
}

moved {
  from = google_project_iam_member.home_worker_trace
  to   = google_project_iam_member.grant["home_worker_trace"]
}

moved {
  from = google_project_iam_member.home_worker_logs
  to   = google_project_iam_member.grant["home_worker_logs"]
}

moved {
  from = google_storage_bucket_iam_member.functions_bucket["data"]
  to   = google_storage_bucket_iam_member.grant["functions_data"]
}

moved {
  from = google_storage_bucket_iam_member.functions_bucket["voices"]
  to   = google_storage_bucket_iam_member.grant["functions_voices"]
}

moved {
  from = google_storage_bucket_iam_member.build_sources
  to   = google_storage_bucket_iam_member.grant["build_sources"]
}

moved {
  from = google_service_account_iam_member.functions_sign_as_self
  to   = google_service_account_iam_member.grant["functions_sign_as_self"]
}

moved {
  from = google_service_account_iam_member.pubsub_agent_token["push"]
  to   = google_service_account_iam_member.grant["pubsub_agent_token_push"]
}

moved {
  from = google_service_account_iam_member.pubsub_agent_token["eventarc"]
  to   = google_service_account_iam_member.grant["pubsub_agent_token_eventarc"]
}

moved {
  from = google_service_account_iam_member.deployer_act_as["functions"]
  to   = google_service_account_iam_member.grant["deployer_act_as_functions"]
}

moved {
  from = google_service_account_iam_member.deployer_act_as["build"]
  to   = google_service_account_iam_member.grant["deployer_act_as_build"]
}

moved {
  from = google_service_account_iam_member.deployer_act_as["push"]
  to   = google_service_account_iam_member.grant["deployer_act_as_push"]
}

moved {
  from = google_service_account_iam_member.deployer_act_as["eventarc"]
  to   = google_service_account_iam_member.grant["deployer_act_as_eventarc"]
}

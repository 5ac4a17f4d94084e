"""Implementations of the ports: Google Cloud, RunPod's REST API, in-process caches.
Third-party exceptions stop here, translated into the gateway's own."""

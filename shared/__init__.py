"""The gateway's core: domain, policies, ports and their adapters. No entrypoint code."""

API_VERSION = 1
"""The job-message / worker API version. Workers advertise it; the router only picks matches."""

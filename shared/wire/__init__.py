"""What crosses a boundary: request bodies, views, Pub/Sub messages, RunPod input and output."""

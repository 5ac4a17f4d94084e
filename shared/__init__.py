"""The gateway's core, one layer per folder; each imports only the layers below it.

``domain`` (jobs and their state machine, stored requests, voices, backends, keys, errors,
formats, the prompt-file format) < ``wire`` (request bodies, views, messages, RunPod I/O) <
``settings`` < ``usecases`` (the gateway and its ports, and what it does) < ``adapters``
(Firestore, GCS, Pub/Sub, RunPod REST, in-process caches) < ``bootstrap`` and ``logs``.
No entrypoint code, no fakes, and no numpy or torch but the prompt-file loader.
"""

"""``qtts``: the gateway's command line for people (speech, voices, jobs, whole chapters).

It talks to the gateway only over HTTP and imports nothing from ``shared``: it is a client,
and must install and run on a laptop that has none of the server's dependencies."""

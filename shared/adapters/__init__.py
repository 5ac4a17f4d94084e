"""Google Cloud implementations of the ports. Google exceptions stop here."""

"""What the gateway does, written against ports; entry points call one function here."""

"""The REST API: a Flask app served inside one functions-framework HTTP function."""

"""Chat templates and webgen prompt/seeds, installed as package data (read with importlib.resources)."""

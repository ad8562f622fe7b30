"""Website-creation samples: an Alpaca-style self-instruct loop against OpenAI-compatible or local models."""

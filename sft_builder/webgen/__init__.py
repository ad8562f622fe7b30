"""Website-creation samples with an Alpaca-style self-instruct loop against any OpenAI-compatible or local model."""

"""Stage one: ask an LLM for visual subclasses of every class and write a validated label set."""

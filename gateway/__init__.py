"""The A/B model-routing gateway: a domain core with no web framework, and its HTTP layer (http/)."""

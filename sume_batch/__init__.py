"""sume-batch: run generative-media campaigns against the Sume Public API from a YAML manifest."""

__version__ = "0.1.0"

# The newest manifest format this tool understands (`version:` in a campaign file).
MANIFEST_VERSION = 1

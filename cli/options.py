"""Spellings the commands share (imported by every command, so it imports nothing)."""

#: How ``lightning`` and ``lightning-cv`` spell the option that replaces an existing run
#: (bare, or with a value: ``--overwrite true``).
OVERWRITE = "--overwrite"

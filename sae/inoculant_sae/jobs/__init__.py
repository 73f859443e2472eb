"""The sidecar's jobs (diff, harvest), the table of job names (registry.py) and what they share."""

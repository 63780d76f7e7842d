"""Integrations with other libraries (optional extras): :mod:`nostride.integrations.ultralytics`."""

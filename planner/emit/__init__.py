"""Deployable artifacts: engine launch commands, manifests, expert maps."""

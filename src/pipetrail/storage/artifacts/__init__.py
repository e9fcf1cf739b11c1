"""Artifact storage: a content-addressed store and the serializers that fill it."""

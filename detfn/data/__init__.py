"""Datasets, transforms, batching and sampling."""

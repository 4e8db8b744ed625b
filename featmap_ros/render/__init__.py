"""Mesh and hand rendering, domain-gap effects."""

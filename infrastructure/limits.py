"""Bounds that the database's columns and the broker's messages share."""

BIGINT_MAX = 2**63 - 1  # the largest id or count a BIGINT column holds

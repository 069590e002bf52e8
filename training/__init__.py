"""Training recipes for the bi-encoder and the cross-encoder; never imported by the services."""

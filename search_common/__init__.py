"""Small shared pieces of the search stack: data loading, artifacts, gRPC plumbing."""

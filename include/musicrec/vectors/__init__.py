"""Vector-store helpers (Milvus, the Qdrant mirror): versioned collections behind aliases."""

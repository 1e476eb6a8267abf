"""receiver: accepts jobs over HTTP and writes them to receiver-topic."""

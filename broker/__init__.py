"""Redis at the edge: versioned global weights, job state, staged data, a private server."""

"""Two-hop (and k-hop) facts: the graph, the splits (generator), the token encoding, the task,
and the Grokked-transformers folder layout (reader and writer)."""

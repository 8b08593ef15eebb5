"""Model families with shared hook names."""

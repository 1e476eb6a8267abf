"""operator: applies StreamSchema resources (a store's migrations) as Jobs."""

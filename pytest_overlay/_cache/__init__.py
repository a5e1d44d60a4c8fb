"""The build cache: keys, the on-disk store, and OCI export and import of its entries."""

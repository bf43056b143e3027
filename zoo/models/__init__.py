"""Course architectures, one module per course. Importing this package imports torch."""

"""The bottom layer: the input-error type and files written whole or not at all."""

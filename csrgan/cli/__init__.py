"""The ``csrgan`` command line: a thin typer layer over the library (parse, validate, call, format)."""

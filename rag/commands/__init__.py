"""The `citeqa` commands, one module per area; rag.cli builds the parser and dispatches to them."""

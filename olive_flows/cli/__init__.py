"""The olive-flows command line: one module per subcommand."""

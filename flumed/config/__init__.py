"""Configuration: loading (TOML, Flume properties), per-component keys, graph checks."""

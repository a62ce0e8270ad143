-- MCP tool permissions on keys and teams. Released: never edit, add a migration instead.

-- JSON arrays of globs over the tool names of /mcp (`github__*`); absent: every tool.
ALTER TABLE keys ADD COLUMN mcp_tools TEXT;
ALTER TABLE teams ADD COLUMN mcp_tools TEXT;

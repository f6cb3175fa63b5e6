-- A repeated call finds its open job by requester and call hash (the MCP gateway attaches to it
-- instead of asking again).
CREATE INDEX command_queue_call ON command_queue (call_hash, requester);

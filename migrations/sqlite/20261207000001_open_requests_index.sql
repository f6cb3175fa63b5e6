-- The open requests of each requester, per caller that submitted them: a repeated call finds
-- the request it joins ("one request per call"), and the per-caller limit on pending requests
-- is counted, without reading every queued job (an imported IT-MCP history can hold tens of
-- thousands). Partial: only open jobs are in it, so it stays as small as the queue; new jobs
-- land at the right edge of their (caller, requester) range.
CREATE INDEX command_queue_open_requests ON command_queue (submitted_by, requester, created_at)
    WHERE status IN ('queued', 'approved', 'picked', 'executing');

import { test, expect } from '@playwright/test';
import { serviceToken } from './pages/realm';

// The decision API on the real server and port, called the way IT-MCP calls it: with a
// client-credentials token from the (Keycloak-like) OpenID provider.

test('IT-MCP asks, gets a queued job for a sudo command, and can follow and cancel it', async ({ request }) => {
  const token = await serviceToken();
  const headers = { authorization: `Bearer ${token}` };
  const allowed = await request.post('/api/v1/decisions', {
    headers,
    data: { tool: 'system-overview', operation: 'getOverview' },
  });
  expect(allowed.status()).toBe(200);
  expect((await allowed.json()).action).toBe('allow');

  const asked = await request.post('/api/v1/decisions', {
    headers: { ...headers, 'idempotency-key': `e2e-${Date.now()}` },
    data: {
      tool: 'ssh-exec',
      operation: 'executeCommand',
      args: { command: 'sudo systemctl restart nginx' },
      target: 'web-1',
      reason: 'nginx returns 502',
    },
  });
  expect(asked.status()).toBe(200);
  const pending = await asked.json();
  expect(pending.action).toBe('require_approval');
  expect(pending.decision.matched_patterns.length + pending.reasons.length).toBeGreaterThan(0);
  expect(pending.status_url).toBe(`/api/v1/jobs/${pending.job_id}`);

  const status = await request.get(`${pending.status_url}?wait=1`, { headers });
  expect(status.status()).toBe(200);
  expect((await status.json()).status).toBe('queued');

  const cancelled = await request.post(`/api/v1/jobs/${pending.job_id}/cancel`, { headers });
  expect(cancelled.status()).toBe(200);
  expect((await cancelled.json()).status).toBe('cancelled');
});

test('bad input gets a stable error code naming the field, never a 500', async ({ request }) => {
  const headers = { authorization: `Bearer ${await serviceToken()}` };
  const unknown = await request.post('/api/v1/decisions', {
    headers,
    data: { tool: 'ssh-exec', operation: 'executeCommand', args: {}, sudo: true },
  });
  expect(unknown.status()).toBe(400);
  expect(await unknown.json()).toMatchObject({ error: 'unknown_field', field: 'sudo' });
  const malformed = await request.post('/api/v1/decisions', {
    headers: { ...headers, 'content-type': 'application/json' },
        // A Buffer is sent as is (a string would be sent JSON-encoded, i.e. as valid JSON).
    data: Buffer.from('{"tool": '),
  });
  expect(malformed.status()).toBe(400);
  expect((await malformed.json()).error).toBe('malformed_json');
  const anonymous = await request.post('/api/v1/decisions', { data: { tool: 'x', operation: 'y' } });
  expect(anonymous.status()).toBe(401);
});

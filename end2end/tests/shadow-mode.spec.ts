import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { serviceToken } from './pages/realm';
import { snap } from './pages/evidence';

// Shadow mode (the e2e policy has a `staging-exec` tool in shadow mode): IT-MCP's call that
// enforcing would hold is allowed and says so; the same call through `ssh-exec` (enforced) is
// held; a CRITICAL one is held in shadow mode too; an auditor finds the let-through call counted
// on the dashboard, and the policies page marks the tool. Photographed at a laptop's and a phone's width, light and dark.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

test('shadow mode lets a call through, says it would have been held, and counts it for the auditor', async ({ page, request, browser }, testInfo) => {
  const headers = { authorization: `Bearer ${await serviceToken()}` };
  const call = (tool: string, command = 'systemctl restart nginx') => ({
    tool,
    operation: tool === 'staging-exec' ? 'run' : 'executeCommand',
    args: { command },
    target: 'stage-1',
    reason: 'pick up the new configuration',
    on_behalf_of: 'alice',
  });
  const shadowed = await request.post('/api/v1/decisions', { headers, data: call('staging-exec') });
  expect(shadowed.status()).toBe(200);
  const allowed = await shadowed.json();
  expect(allowed.action).toBe('allow');
  expect(allowed.would_block).toBe(true);
  expect(allowed.job_id).toBeUndefined();
  expect(allowed.reasons[0]).toContain('shadow mode: allowed, but enforcing would hold it for 1 approval');
  // CRITICAL is held in shadow mode too.
  const critical = await request.post('/api/v1/decisions', { headers, data: call('staging-exec', 'rm -rf /') });
  const heldAnyway = await critical.json();
  expect(heldAnyway.action).toBe('require_approval');
  expect(heldAnyway.would_block).toBeUndefined();
  await request.post(`/api/v1/jobs/${heldAnyway.job_id}/cancel`, { headers });

  const enforced = await request.post('/api/v1/decisions', { headers, data: call('ssh-exec') });
  expect(enforced.status()).toBe(200);
  const held = await enforced.json();
  expect(held.action).toBe('require_approval');
  expect(held.would_block).toBeUndefined();
  await request.post(`/api/v1/jobs/${held.job_id}/cancel`, { headers });

  const portal = new Portal(page);
  await portal.signInWithProvider('bob', '/');
  await portal.hydrated();
  const panel = page.getByTestId('shadow');
  await expect(panel).toBeVisible();
  await expect(panel.getByRole('heading', { name: /Shadow mode: what enforcing would have held/ })).toBeVisible();
  await expect(page.getByTestId('shadow-operations')).toContainText('staging-exec.run');
  await expect(page.getByTestId('shadow-without-pattern')).toContainText('held for no dangerous pattern');
  const row = page.getByTestId('shadow-by-operation').getByRole('row', { name: /staging-exec · run/ });
  await expect(row).toContainText('HIGH');
  expect(Number(await page.getByTestId('shadow-total').textContent())).toBeGreaterThanOrEqual(1);
  await expect(page.getByTestId('recent')).toContainText('allow (shadow mode)');
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await panel.scrollIntoViewIfNeeded();
      await snap(page, testInfo, `dashboard-${view.width}-${scheme}`);
    }
  }
  // Someone who may not read the trail does not see the panel.
  const other = await browser.newContext({ baseURL: testInfo.project.use.baseURL });
  const viewer = new Portal(await other.newPage());
  await viewer.signInWithProvider('carol', '/');
  await expect(viewer.page.getByRole('heading', { name: 'Dashboard', level: 1 })).toBeVisible();
  await expect(viewer.page.getByTestId('shadow')).toHaveCount(0);
  await other.close();

  await page.setViewportSize(VIEWS[0]);
  await page.goto('/policies');
  await expect(page.getByRole('row', { name: /staging-exec run/ }).locator('.shadow-mode')).toHaveText('shadow');
});

import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ApprovalDetailPage } from './pages/approvals';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';
import { SimulatorPage } from './pages/simulator';

// Journey 8: remembered approvals. Alice approves IT-MCP's `systemctl restart` and remembers it
// for any unit name on that host, five uses; the next restart of another unit runs without a
// request and its answer names the grant; the Grants page shows the use; she revokes it, and
// the next restart asks again. Photographed at a laptop's and a phone's width, light and dark.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

test('an approval remembered from the approval page lets the next call like it run, until it is revoked', async ({ page, request }, testInfo) => {
  test.setTimeout(60_000);
  const itMcp = await ItMcp.connect(request);
  const restart = (unit: string) => ({
    tool: 'ssh-exec',
    operation: 'executeCommand',
    args: { command: `systemctl restart ${unit}` },
    target: 'web-7',
    reason: 'reload the changed configuration',
  });
  const first = await itMcp.decide(restart('e2e-grant-a.service'));
  expect(first.action).toBe('require_approval');
  const jobId = first.job_id as string;

  await new Portal(page).signInWithProvider('alice', `/approvals/${jobId}`);
  const alice = new ApprovalDetailPage(page);
  await expect(page.getByTestId('remember')).toHaveCount(0);
  await alice.approve('restarting a unit on web-7 is routine');
  const form = page.getByTestId('remember');
  await expect(form).toBeVisible();
  const generalise = page.getByTestId('remember-generalise');
  await expect(generalise.locator('option')).toHaveText([
    'This exact call only',
    '`systemctl restart *`: any word for `e2e-grant-a.service`',
  ]);
  await generalise.selectOption('command[2]');
  await form.locator('input[name=max_uses]').fill('5');
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await form.scrollIntoViewIfNeeded();
      await snap(page, testInfo, `1-remember-form-${view.width}-${scheme}`);
    }
  }
  await page.setViewportSize(VIEWS[0]);
  await page.getByTestId('remember-submit').click();
  const remembered = page.getByTestId('remembered');
  await expect(remembered).toContainText('Remembered as grant');
  const grantId = /grant (\S+)\./.exec((await remembered.textContent()) ?? '')?.[1] ?? '';
  expect(grantId).not.toBe('');
  await expect(page.getByTestId('already-remembered')).toContainText(grantId);

  // The next restart of another unit on web-7 runs without asking, and says which grant.
  const second = await itMcp.decide(restart('e2e-grant-b.service'));
  expect(second.action).toBe('allow');
  expect(second.grant_id).toBe(grantId);
  expect(second.job_id).toBeUndefined();
  expect(second.reasons[0]).toContain(`allowed by standing grant ${grantId} (remembered by alice`);
  // Another verb, or another host, still asks.
  const stop = await itMcp.decide({ ...restart('e2e-grant-b.service'), args: { command: 'systemctl stop e2e-grant-b.service' } });
  expect(stop.action).toBe('require_approval');
  await request.post(`/api/v1/jobs/${stop.job_id}/cancel`, { headers: { authorization: `Bearer ${itMcp.token}` } });

  // The policies page's simulator says which grant would allow a call, and none for another verb.
  await page.goto('/policies');
  await new Portal(page).hydrated();
  const simulator = new SimulatorPage(page);
  await simulator.simulate(restart('e2e-grant-z.service'), ['ssh-linux', 'remote-exec']);
  await expect(simulator.action).toHaveText('require_approval');
  await expect(page.getByTestId('sim-grant')).toContainText(`grant ${grantId} would allow it for it-mcp`);
  await simulator.simulate({ ...restart('x.service'), args: { command: 'systemctl stop x.service' } }, ['ssh-linux', 'remote-exec']);
  await expect(page.getByTestId('sim-grant')).toHaveText('none would apply');

  await page.goto('/grants');
  const row = page.locator(`tr[data-grant="${grantId}"]`);
  await expect(row).toContainText('standing');
  await expect(row).toContainText('systemctl restart *');
  await expect(row).toContainText('1 of 5');
  await expect(row).toContainText('web-7');
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await snap(page, testInfo, `2-grants-${view.width}-${scheme}`);
    }
  }
  await page.setViewportSize(VIEWS[0]);
  await row.getByTestId('revoke-grant').click();
  await expect(page.getByTestId('grant-revoked')).toContainText(grantId);
  await expect(page.locator(`tr[data-grant="${grantId}"]`)).toContainText('revoked by alice');

  // Revoked: the next restart asks again.
  const third = await itMcp.decide(restart('e2e-grant-c.service'));
  expect(third.action).toBe('require_approval');
  expect(third.grant_id).toBeUndefined();
  await request.post(`/api/v1/jobs/${third.job_id}/cancel`, { headers: { authorization: `Bearer ${itMcp.token}` } });
});

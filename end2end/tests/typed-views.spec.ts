import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ItMcp } from './pages/itmcp';

// The job list, a job's page and the Reports form show the server's words from one place: the
// job's summary (risk badge, status, call hash) and the vocabularies the export API accepts.
// Each view is photographed at a laptop's and a phone's width, light and dark.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

test('jobs and reports show the job summary and the shared vocabularies', async ({ page, browser, request }, testInfo) => {
  test.setTimeout(90_000);
  const itMcp = await ItMcp.connect(request);
  const answer = await itMcp.decide({
    tool: 'ssh-exec',
    operation: 'executeCommand',
    args: { command: 'systemctl restart nginx' },
    target: 'web-7',
    reason: 'nginx stopped answering',
  });
  expect(answer.action).toBe('require_approval');
  expect(answer.status).toBe('queued');

  const portal = new Portal(page);
  const shoot = async (name: string, page_ = page) => {
    for (const view of VIEWS) {
      for (const scheme of ['light', 'dark'] as const) {
        await page_.setViewportSize(view);
        await page_.emulateMedia({ colorScheme: scheme });
        await page_.screenshot({ path: testInfo.outputPath(`${name}-${view.width}-${scheme}.png`), fullPage: true });
      }
    }
    await page_.setViewportSize(VIEWS[0]);
  };

  await portal.signInWithProvider('alice', '/jobs?status=queued');
  await portal.hydrated();
  const row = page.locator(`tr[data-job="${answer.job_id}"]`);
  await expect(row).toBeVisible();
  await expect(row.locator('.badge')).toHaveText(answer.risk);
  await expect(row.locator('.status')).toHaveText('queued');
  await shoot('jobs');

  await page.goto(`/jobs/${answer.job_id}`);
  await portal.hydrated();
  await expect(page.getByTestId('job-status')).toHaveText('queued');
  await expect(page.locator('code.hash').first()).toHaveText(answer.decision.call_hash);
  await expect(page.getByRole('link', { name: 'Review this request →' })).toHaveAttribute('href', `/approvals/${answer.job_id}`);
  await shoot('job');

  // Reports are for auditors: bob, in a browser of his own.
  const auditor = await (await browser.newContext()).newPage();
  const bob = new Portal(auditor);
  await bob.signInWithProvider('bob', '/reports');
  await bob.hydrated();
  const options = (id: string) => auditor.locator(`#${id} option`).allTextContents();
  expect(await options('report-risk')).toEqual(['Any', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL']);
  expect(await options('report-action')).toEqual(['Any', 'allow', 'deny', 'require_approval', 'approve', 'execute', 'cancel']);
  await shoot('reports', auditor);
  await auditor.context().close();
});

import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ApprovalsPage } from './pages/approvals';
import { ItMcp } from './pages/itmcp';

// Live pages: the dashboard and the approvals list follow the server's event stream, so a new
// request shows up without a reload. And the profile page says who is signed in.

const rmRequest = (path: string) => ({
  tool: 'ssh-exec',
  operation: 'executeCommand',
  args: { command: `rm -rf ${path}` },
  target: 'web-7',
  reason: 'disk full on web-7',
});

test('the dashboard shows a new pending request without a reload', async ({ page, request }) => {
  const portal = new Portal(page);
  await portal.signInWithProvider('dave', '/');
  await portal.hydrated();
  await expect(page.locator('body')).toHaveAttribute('data-live', 'true');
  await expect(page.getByTestId('decisions-chart')).toBeVisible();
  const before = Number(await page.getByTestId('pending-count').textContent());
  const itMcp = await ItMcp.connect(request);
  await itMcp.askForApproval(rmRequest('/tmp/build-cache'));
  // The server's event stream says the queue changed; the page refetches its figures.
  await expect
    .poll(async () => Number(await page.getByTestId('pending-count').textContent()), { timeout: 10_000 })
    .toBeGreaterThan(before);
  expect(page.url()).toMatch(/\/$/);
});

test('a new request appears on the open approvals page without a reload; the profile shows capabilities', async ({ page, request }) => {
  const portal = new Portal(page);
  await portal.signInWithProvider('erin', '/approvals');
  await portal.hydrated();
  await expect(page.locator('body')).toHaveAttribute('data-live', 'true');
  const itMcp = await ItMcp.connect(request);
  const jobId = await itMcp.askForApproval(rmRequest('/home/erin/tmp'));
  await expect(new ApprovalsPage(page).row(jobId)).toBeVisible({ timeout: 10_000 });
  expect(page.url()).toMatch(/\/approvals$/);

  await page.getByTestId('profile-link').click();
  await expect(page.getByTestId('profile-username')).toHaveText('erin');
  await expect(page.getByTestId('profile-roles')).toContainText('approver');
  await expect(page.getByTestId('profile-capabilities')).toContainText('ssh-linux');
});

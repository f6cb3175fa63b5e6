import { test, expect, type Browser } from '@playwright/test';
import { Portal } from './pages/portal';
import { ApprovalsPage, ApprovalDetailPage } from './pages/approvals';
import { JobPage } from './pages/jobs';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';

// Journey 5: journey 1 with JavaScript disabled. Every page is server-rendered and every vote is
// a plain form post, so sign-in, reading, approving and following the job all work without WASM.

async function personWithoutJs(browser: Browser, user: string, path: string) {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await new Portal(page).signInWithProvider(user, path);
  return { context, page };
}

test('the CRITICAL approve journey works with plain form posts and no JavaScript', async ({ browser, request }, testInfo) => {
  test.setTimeout(90_000);
  const marker = `nojs-${Date.now().toString(36)}`;
  const itMcp = await ItMcp.connect(request);
  const jobId = await itMcp.askForApproval({
    tool: 'ssh-exec',
    operation: 'executeSudoCommand',
    args: { command: `echo "cleared the apt cache ${marker}"` },
    target: 'web-8',
    reason: 'apt cache filled /var',
    on_behalf_of: 'alice',
  });
  const outcome = itMcp.followUntilFinal(jobId);

  // Alice finds it in the list (a plain page load) and cannot vote on it.
  const alice = await personWithoutJs(browser, 'alice', '/approvals');
  await expect(alice.page.locator('body')).not.toHaveAttribute('data-hydrated', 'true');
  const list = new ApprovalsPage(alice.page);
  await expect(list.row(jobId)).toContainText('0/2');
  await list.openRequest(jobId);
  await expect(new ApprovalDetailPage(alice.page).cannotVote).toContainText('cannot approve their own requests');
  await snap(alice.page, testInfo, '1-alice-cannot-vote');

  // Dave and erin approve through the forms; each post redirects back to the request.
  const dave = await personWithoutJs(browser, 'dave', `/approvals/${jobId}`);
  const daveView = new ApprovalDetailPage(dave.page);
  await daveView.approve('checked: only clears the cache');
  await expect(dave.page).toHaveURL(new RegExp(`/approvals/${jobId}\\?voted=approve$`));
  await expect(daveView.quorum).toHaveText('1/2');
  await snap(dave.page, testInfo, '2-dave-approved');

  const erin = await personWithoutJs(browser, 'erin', `/approvals/${jobId}`);
  const erinView = new ApprovalDetailPage(erin.page);
  // A CRITICAL approval needs a comment: the browser will not send the form without one.
  await expect(erin.page.locator('form.vote.approve textarea')).toHaveAttribute('required', '');
  await erinView.approve('agreed');
  await expect(erinView.quorum).toHaveText('2/2');
  await snap(erin.page, testInfo, '3-erin-approved');

  const job = new JobPage(erin.page);
  await job.waitForStatus(jobId, 'completed');
  await expect(job.output).toContainText(`cleared the apt cache ${marker}`);
  await snap(erin.page, testInfo, '4-job-output');

  const { job: final } = await outcome;
  expect(final.status).toBe('completed');
  for (const person of [alice, dave, erin]) await person.context.close();
});

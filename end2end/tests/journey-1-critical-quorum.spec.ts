import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ApprovalsPage, ApprovalDetailPage } from './pages/approvals';
import { JobPage } from './pages/jobs';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';

// Journey 1: IT-MCP asks, on alice's behalf, to run a CRITICAL sudo command. It appears on
// alice's open approvals page without a reload; she may not vote on her own request; dave and
// erin approve (quorum 2); the server runs the job and its page shows the output; IT-MCP's
// long-poll ends with `completed`.

test('a CRITICAL sudo command needs two other approvers, then runs and reports its output', async ({ browser, page, request }, testInfo) => {
  test.setTimeout(90_000);
  const marker = `e2e-${Date.now().toString(36)}`;
  const itMcp = await ItMcp.connect(request);

  const alice = new Portal(page);
  const errors = alice.watchForErrors();
  await alice.signInWithProvider('alice', '/approvals');
  await alice.hydrated();
  await expect(page.locator('body')).toHaveAttribute('data-live', 'true');

  const answer = await itMcp.decide({
    tool: 'ssh-exec',
    operation: 'executeSudoCommand',
    args: { command: `echo "rotated the nginx logs ${marker}"` },
    target: 'web-7',
    reason: 'nginx logs filled /var',
    on_behalf_of: 'alice',
  });
  expect(answer.action).toBe('require_approval');
  expect(answer.risk).toBe('CRITICAL');
  const jobId = answer.job_id as string;
  // IT-MCP waits for the outcome while people decide.
  const outcome = itMcp.followUntilFinal(jobId);

  // It appears on alice's open page by itself.
  const approvals = new ApprovalsPage(page);
  const row = approvals.row(jobId);
  await expect(row).toBeVisible({ timeout: 10_000 });
  expect(page.url()).toMatch(/\/approvals$/);
  await expect(row).toContainText('CRITICAL');
  await expect(row).toContainText('executeSudoCommand');
  await expect(row).toContainText('alice');
  await expect(row).toContainText('0/2');
  await snap(page, testInfo, '1-appears-for-alice');

  // Alice sees her own request but cannot vote on it.
  await approvals.openRequest(jobId);
  const aliceView = new ApprovalDetailPage(page);
  await expect(aliceView.status).toHaveText('queued');
  await expect(aliceView.cannotVote).toContainText('cannot approve their own requests');
  await expect(aliceView.approveButton).toHaveCount(0);
  await snap(page, testInfo, '2-alice-cannot-vote');

  // Dave approves: one of two.
  const daveContext = await browser.newContext();
  const davePage = await daveContext.newPage();
  await new Portal(davePage).signInWithProvider('dave', `/approvals/${jobId}`);
  const dave = new ApprovalDetailPage(davePage);
  await expect(dave.quorum).toHaveText('0/2');
  await dave.approve('looked at the disk graph; rotating is safe');
  await expect(dave.quorum).toHaveText('1/2');
  await expect(dave.status).toHaveText('queued');
  await expect(dave.cannotVote).toContainText('already voted');
  await snap(davePage, testInfo, '3-dave-approved-1-of-2');

  // Erin approves: two of two, and the job is approved.
  const erinContext = await browser.newContext();
  const erinPage = await erinContext.newPage();
  await new Portal(erinPage).signInWithProvider('erin', `/approvals/${jobId}`);
  const erin = new ApprovalDetailPage(erinPage);
  await expect(erin.quorum).toHaveText('1/2');
  await expect(erin.votes).toContainText('dave');
  await erin.approve('second pair of eyes: fine');
  await expect(erin.quorum).toHaveText('2/2');
  await snap(erinPage, testInfo, '4-erin-approved-2-of-2');

  // The server's executor runs it; the job's page shows the output and the whole story.
  const job = new JobPage(erinPage);
  await job.waitForStatus(jobId, 'completed');
  await expect(job.output).toContainText(`rotated the nginx logs ${marker}`);
  await expect(job.timelineStep('approval')).toHaveCount(2);
  await expect(job.timeline).toContainText('dave');
  await expect(job.timeline).toContainText('erin');
  await snap(erinPage, testInfo, '5-job-completed-with-output');

  // IT-MCP's long-poll saw it through to the end.
  const { job: final, seen } = await outcome;
  expect(final.status).toBe('completed');
  expect(final.approvals.map((a: { approver: string }) => a.approver).sort()).toEqual(['dave', 'erin']);
  expect(String(final.result)).toContain(`rotated the nginx logs ${marker}`);
  expect(seen[0]).toBe('queued');
  expect(seen[seen.length - 1]).toBe('completed');

  // And it left the pending list alice still has open.
  await expect(row).toHaveCount(0, { timeout: 10_000 });
  expect(errors).toEqual([]);
  await daveContext.close();
  await erinContext.close();
});

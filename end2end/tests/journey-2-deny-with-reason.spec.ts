import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ApprovalDetailPage } from './pages/approvals';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';

// Journey 2: a HIGH `rm -rf` request. Its page marks `rm -rf`; bob (auditor) gets no vote
// buttons and a forged vote is refused; alice denies with a reason, and IT-MCP's long-poll
// returns that reason (what the AI assistant is told).

test('a HIGH rm -rf is highlighted, an auditor cannot vote, and a denial reason reaches the caller', async ({ browser, page, request }, testInfo) => {
  test.setTimeout(60_000);
  const itMcp = await ItMcp.connect(request);
  const answer = await itMcp.decide({
    tool: 'ssh-exec',
    operation: 'executeCommand',
    args: { command: 'rm -rf /var/tmp/x' },
    target: 'build-2',
    reason: 'clean the build scratch space',
  });
  expect(answer.action).toBe('require_approval');
  expect(answer.risk).toBe('HIGH');
  const jobId = answer.job_id as string;
  const outcome = itMcp.followUntilFinal(jobId);

  // Bob, an auditor, reads it: the dangerous part is marked, and there is nothing to press.
  await new Portal(page).signInWithProvider('bob', `/approvals/${jobId}`);
  const bob = new ApprovalDetailPage(page);
  await expect(bob.highlight('rm-recursive-force')).toHaveText('rm -rf /var/tmp/x');
  await expect(page.getByTestId('patterns')).toContainText('rm-recursive-force');
  // What the command does, by the catalogue: a deletion under scratch only.
  await expect(page.getByTestId('commands')).toContainText('rm -rf /var/tmp/x');
  await expect(page.getByTestId('commands')).toContainText('changes only scratch: /var/tmp/x');
  await expect(bob.cannotVote).toContainText('approver');
  await expect(bob.approveButton).toHaveCount(0);
  await expect(bob.denyButton).toHaveCount(0);
  await snap(page, testInfo, '1-auditor-sees-no-buttons');

  // A forged vote (the form posted anyway) is refused by the server, with the reason.
  const forged = await page.request.post('/api/cast_vote', {
    headers: { accept: 'text/html', origin: new URL(page.url()).origin },
    form: { job_id: jobId, verdict: 'approve', reason: 'trust me' },
    maxRedirects: 0,
  });
  expect(forged.status()).toBe(302);
  expect(forged.headers()['location']).toContain(`/approvals/${jobId}?error=`);
  await bob.open(jobId);
  await expect(bob.status).toHaveText('queued');

  // Alice denies, saying why.
  const aliceContext = await browser.newContext();
  const alicePage = await aliceContext.newPage();
  await new Portal(alicePage).signInWithProvider('alice', `/approvals/${jobId}`);
  const alice = new ApprovalDetailPage(alicePage);
  const reason = 'use the tmp-cleaner job instead of rm -rf';
  await alice.deny(reason);
  await expect(alice.status).toHaveText('denied');
  await expect(alice.votes).toContainText(reason);
  await snap(alicePage, testInfo, '2-alice-denied');

  // IT-MCP learns the outcome and the reason.
  const { job } = await outcome;
  expect(job.status).toBe('denied');
  expect(job.denial_reason).toContain(reason);
  await aliceContext.close();
});

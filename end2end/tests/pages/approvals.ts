import { expect, type Locator, type Page } from '@playwright/test';

/** `/approvals`: the pending list. */
export class ApprovalsPage {
  readonly table: Locator;

  constructor(readonly page: Page) {
    this.table = page.getByTestId('approvals');
  }

  async open() {
    await this.page.goto('/approvals');
  }

  row(jobId: string): Locator {
    return this.page.locator(`tr[data-job="${jobId}"]`);
  }

  async openRequest(jobId: string) {
    await this.row(jobId).locator('a').first().click();
    await expect(this.page).toHaveURL(new RegExp(`/approvals/${jobId}$`));
  }
}

/** `/approvals/:id`: one request, its votes and the vote forms. */
export class ApprovalDetailPage {
  readonly status: Locator;
  readonly quorum: Locator;
  readonly votes: Locator;
  readonly approveButton: Locator;
  readonly denyButton: Locator;
  readonly cannotVote: Locator;
  readonly done: Locator;
  readonly error: Locator;

  constructor(readonly page: Page) {
    this.status = page.getByTestId('approval-status');
    this.quorum = page.getByTestId('quorum');
    this.votes = page.getByTestId('votes');
    this.approveButton = page.getByTestId('approve');
    this.denyButton = page.getByTestId('deny');
    this.cannotVote = page.getByTestId('cannot-vote');
    this.done = page.getByTestId('vote-done');
    this.error = page.getByTestId('vote-error');
  }

  async open(jobId: string) {
    await this.page.goto(`/approvals/${jobId}`);
  }

  /** The dangerous part of the command marked with the pattern that matched it. */
  highlight(patternId: string): Locator {
    return this.page.locator(`mark[data-pattern="${patternId}"]`);
  }

  async approve(comment: string) {
    await this.page.locator('form.vote.approve textarea').fill(comment);
    await this.approveButton.click();
    await expect(this.done).toHaveText('Approved.');
  }

  async deny(reason: string) {
    await this.page.locator('form.vote.deny textarea').fill(reason);
    await this.denyButton.click();
    await expect(this.done).toHaveText('Denied.');
  }
}

import { expect, type Locator, type Page } from '@playwright/test';

/** `/jobs/:id`: a job's status, timeline and output. */
export class JobPage {
  readonly status: Locator;
  readonly timeline: Locator;
  readonly output: Locator;
  readonly duration: Locator;

  constructor(readonly page: Page) {
    this.status = page.getByTestId('job-status');
    this.timeline = page.getByTestId('timeline');
    this.output = page.getByTestId('job-output');
    this.duration = page.getByTestId('job-duration');
  }

  async open(jobId: string) {
    await this.page.goto(`/jobs/${jobId}`);
  }

  /** Reload until the job reaches `status` (the executor runs on its own time). */
  async waitForStatus(jobId: string, status: string, timeout = 30_000) {
    await expect
      .poll(async () => {
        await this.open(jobId);
        return (await this.status.textContent())?.trim();
      }, { timeout, intervals: [250, 500, 1000] })
      .toBe(status);
  }

  timelineStep(kind: string): Locator {
    return this.timeline.locator(`li[data-kind="${kind}"]`);
  }
}

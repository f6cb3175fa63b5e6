import type { Locator, Page } from '@playwright/test';

/** The Reports page: the period and filter form, the preview, and the download links. */
export class ReportsPage {
  readonly total: Locator;
  readonly error: Locator;

  constructor(readonly page: Page) {
    this.total = page.getByTestId('report-total');
    this.error = page.getByTestId('report-error');
  }

  async open(query = '') {
    await this.page.goto(`/reports${query}`);
  }

  /** Fill the form (dates as YYYY-MM-DD, selects by value) and preview. */
  async preview(fields: { from?: string; to?: string; framework?: string; tool?: string; caller?: string; risk?: string; action?: string }) {
    for (const [name, value] of Object.entries(fields)) {
      if (value === undefined) continue;
      const control = this.page.locator(`#report-${name}`);
      if ((await control.evaluate((el) => el.tagName)) === 'SELECT') await control.selectOption(value);
      else await control.fill(value);
    }
    await this.page.getByRole('button', { name: 'Preview' }).click();
  }

  link(format: 'csv' | 'jsonl' | 'pdf' | 'bundle'): Locator {
    return this.page.getByTestId(`export-${format}`);
  }

  /** Click a download link and save the file at `file`. */
  async download(format: 'csv' | 'jsonl' | 'pdf' | 'bundle', file: string) {
    const [download] = await Promise.all([this.page.waitForEvent('download'), this.link(format).click()]);
    await download.saveAs(file);
    return download.suggestedFilename();
  }
}

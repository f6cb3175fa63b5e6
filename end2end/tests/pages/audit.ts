import { expect, type Locator, type Page } from '@playwright/test';

/** `/audit`: the explorer's filters, rows and pagination; `/audit/:seq`: one row. */
export class AuditPage {
  readonly rows: Locator;
  readonly older: Locator;
  readonly chainStatus: Locator;

  constructor(readonly page: Page) {
    this.rows = page.getByTestId('audit-rows').locator('tbody tr');
    this.older = page.getByTestId('older-rows');
    this.chainStatus = page.getByTestId('chain-status');
  }

  async open() {
    await this.page.goto('/audit');
  }

  /** Fill filters by field name (`tool`, `action`, `from`, …) and submit the form. */
  async filter(fields: Record<string, string>) {
    for (const [name, value] of Object.entries(fields)) {
      await this.page.locator(`#audit-${name}`).fill(value);
    }
    await this.page.getByRole('button', { name: 'Filter' }).click();
  }

  /** The sequence numbers of the rows shown, newest first. */
  async seqs(): Promise<number[]> {
    return (await this.rows.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-seq')))).map(Number);
  }

  async openRow(seq: number) {
    await this.page.locator(`tr[data-seq="${seq}"]`).getByRole('link').first().click();
    await expect(this.page).toHaveURL(new RegExp(`/audit/${seq}$`));
  }
}

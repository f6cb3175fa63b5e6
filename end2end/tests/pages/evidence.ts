import type { Page, TestInfo } from '@playwright/test';
import * as path from 'node:path';

/** Where journey screenshots are kept (CI keeps this folder as an artifact). */
export const SCREENSHOTS = path.resolve(__dirname, '..', '..', 'artifacts', 'screenshots');

/** Save a full-page screenshot of a journey step, and attach it to the test's report. */
export async function snap(page: Page, testInfo: TestInfo, step: string) {
  const journey = path.basename(testInfo.file, '.spec.ts');
  const file = path.join(SCREENSHOTS, `${journey}--${step}.png`);
  await page.screenshot({ path: file, fullPage: true });
  await testInfo.attach(step, { path: file, contentType: 'image/png' });
}

import { test, expect, Page, TestInfo } from '@playwright/test';
import { Portal } from './pages/portal';

// What a person sees when something is refused: the product's sentence naming the field at
// fault, never the framework's words ("error running server function"). Each view is
// photographed at a laptop's and a phone's width, light and dark.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

async function photograph(page: Page, testInfo: TestInfo, name: string) {
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await page.screenshot({ path: testInfo.outputPath(`${name}-${view.width}-${scheme}.png`), fullPage: true });
    }
  }
  await page.setViewportSize(VIEWS[0]);
}

test('a bad filter and a bad simulator input are refused in the product\'s words', async ({ page }, testInfo) => {
  const portal = new Portal(page);
  await portal.signInWithProvider('bob', '/audit?from=yesterday');
  await portal.hydrated();
  const refusal = page.getByRole('alert');
  await expect(refusal).toContainText('from: not a date or time');
  await expect(refusal).not.toContainText('server function');
  await photograph(page, testInfo, 'audit-bad-filter');

  await page.goto('/policies');
  await portal.hydrated();
  await page.getByLabel('Arguments (JSON object)').fill('{"command": ');
  await page.getByTestId('simulate').click();
  const simError = page.getByTestId('sim-error');
  await expect(simError).toContainText('args: the arguments are not valid JSON');
  await expect(simError).not.toContainText('server function');
  await simError.scrollIntoViewIfNeeded();
  await photograph(page, testInfo, 'simulator-bad-args');
});

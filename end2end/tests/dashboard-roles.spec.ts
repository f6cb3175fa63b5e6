import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';

// The dashboard's "Recent activity" rows are the audit trail's: an auditor sees them, a viewer
// (whom /audit refuses) does not, from the page or after hydration. Each view is photographed at
// a laptop's and a phone's width, light and dark, into the run's test-results folder.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

for (const [user, seesTrail] of [['bob', true], ['carol', false]] as const) {
  test(`the dashboard shows the newest audit rows only to those who may read the trail (${user})`, async ({ page }, testInfo) => {
    const portal = new Portal(page);
    await portal.signInWithProvider(user, '/');
    await portal.hydrated();
    await expect(page.getByRole('heading', { name: 'Dashboard', level: 1 })).toBeVisible();
    if (seesTrail) {
      await expect(page.getByTestId('recent')).toBeVisible();
      await expect(page.getByRole('heading', { name: 'Recent activity' })).toBeVisible();
    } else {
      await expect(page.getByTestId('recent')).toHaveCount(0);
      await expect(page.getByRole('heading', { name: 'Recent activity' })).toHaveCount(0);
    }
    for (const view of VIEWS) {
      for (const scheme of ['light', 'dark'] as const) {
        await page.setViewportSize(view);
        await page.emulateMedia({ colorScheme: scheme });
        await page.screenshot({
          path: testInfo.outputPath(`dashboard-${user}-${view.width}-${scheme}.png`),
          fullPage: true,
        });
      }
    }
  });
}

import { test, expect } from '@playwright/test';
import { Portal, ADMIN_PASSWORD } from './pages/portal';

// Hydration must not move what the server rendered: the browser's layout-shift entries (the
// API behind Cumulative Layout Shift) from first paint until the page has hydrated and settled.
// Measured so far: 0 on most sections, 0.01-0.03 on the dashboard and the audit explorer, where
// the times switch from UTC to the viewer's zone after hydration. The goal is 0, which is tracked
// in the portal issue. This test holds every section below 0.1, the "good" CLS threshold, until
// the goal is met.
const SECTIONS = ['/', '/approvals', '/jobs', '/audit', '/reports', '/policies', '/profile'];

for (const path of SECTIONS) {
  test(`nothing moves while ${path} hydrates`, async ({ page }) => {
    await page.addInitScript(() => {
      const shifts: number[] = [];
      (window as unknown as { __shifts: number[] }).__shifts = shifts;
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) shifts.push((entry as unknown as { value: number }).value);
      }).observe({ type: 'layout-shift', buffered: true });
    });
    const portal = new Portal(page);
    await portal.signIn('admin', ADMIN_PASSWORD, path);
    await portal.hydrated();
    await page.waitForTimeout(500);
    // The measurement itself must be live, or a zero would prove nothing.
    expect(await page.evaluate(() => PerformanceObserver.supportedEntryTypes.includes('layout-shift'))).toBe(true);
    const shift = await page.evaluate(() =>
      (window as unknown as { __shifts: number[] }).__shifts.reduce((a, b) => a + b, 0),
    );
    expect(shift, `cumulative layout shift on ${path}`).toBeLessThan(0.1);
  });
}

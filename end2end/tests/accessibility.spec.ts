import { test, expect, type Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { Portal } from './pages/portal';
import { ItMcp } from './pages/itmcp';

// axe-core on every page of the portal, in the light and the dark theme: no serious or critical
// violation of WCAG 2.x A/AA. Pages are checked once hydrated (what people use) — and the
// sign-in page signed out.

async function seriousViolations(page: Page) {
  const results = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
}

for (const scheme of ['light', 'dark'] as const) {
  test(`every page passes axe-core in the ${scheme} theme`, async ({ page, request }) => {
    test.setTimeout(90_000);
    await page.emulateMedia({ colorScheme: scheme });
    await page.goto('/sign-in');
    expect(await seriousViolations(page), '/sign-in').toEqual([]);

    const itMcp = await ItMcp.connect(request);
    const jobId = await itMcp.askForApproval({
      tool: 'ssh-exec',
      operation: 'executeCommand',
      args: { command: 'rm -rf /var/tmp/axe-check' },
      target: 'web-9',
      reason: 'accessibility check',
    });
    const portal = new Portal(page);
    await portal.signIn();
    await page.goto('/audit');
    const seq = await page.getByTestId('audit-rows').locator('tbody tr').first().getAttribute('data-seq');
    expect(seq).toBeTruthy();

    const pages = ['/', '/approvals', `/approvals/${jobId}`, '/jobs', `/jobs/${jobId}`, '/audit', `/audit/${seq}`, '/reports', '/policies', '/profile'];
    const found: Record<string, unknown> = {};
    for (const path of pages) {
      await page.goto(path);
      await portal.hydrated();
      const violations = await seriousViolations(page);
      if (violations.length > 0) found[path] = violations;
    }
    expect(found).toEqual({});
  });
}

import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { AuditPage } from './pages/audit';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';

// Journey 3: the audit explorer's filters narrow the rows correctly, its keyset pagination
// walks older rows without gaps or repeats, and a row opens its detail with its chain position.

test('audit filters narrow the rows, pages go back in time, and a row opens its detail', async ({ page, request }, testInfo) => {
  test.setTimeout(60_000);
  // More matching rows than one page holds (50), plus others the filter must leave out.
  const itMcp = await ItMcp.connect(request);
  for (let batch = 0; batch < 6; batch++) {
    await Promise.all(
      Array.from({ length: 10 }, () => itMcp.decide({ tool: 'system-overview', operation: 'getOverview' })),
    );
  }
  await itMcp.decide({ tool: 'ssh-exec', operation: 'executeCommand', args: { command: 'uptime' }, target: 'web-1' });

  await new Portal(page).signInWithProvider('bob', '/audit');
  const audit = new AuditPage(page);
  await expect(audit.rows.first()).toBeVisible();
  const today = new Date().toISOString().slice(0, 10);
  await audit.filter({ from: today, tool: 'system-overview', action: 'allow', kind: 'decision' });
  await expect(page).toHaveURL(/tool=system-overview/);
  await expect(page).toHaveURL(/action=allow/);
  await snap(page, testInfo, '1-filtered');

  // Every row on the page matches every filter.
  await expect(audit.rows).toHaveCount(50);
  for (const text of await audit.rows.allInnerTexts()) {
    expect(text).toContain('system-overview');
    expect(text).toContain('getOverview');
    expect(text).toContain('allow');
    expect(text).toContain('decision');
    expect(text).not.toContain('ssh-exec');
  }
  const first = await audit.seqs();
  expect(first).toEqual([...first].sort((a, b) => b - a));

  // The next page continues below the last row, still filtered, with no repeats.
  await audit.older.click();
  await expect(page).toHaveURL(new RegExp(`before=${first[first.length - 1]}`));
  await expect(page).toHaveURL(/tool=system-overview/);
  await expect(audit.rows.first()).toBeVisible();
  const second = await audit.seqs();
  expect(Math.max(...second)).toBeLessThan(Math.min(...first));
  for (const text of await audit.rows.allInnerTexts()) {
    expect(text).toContain('system-overview');
    expect(text).toContain('allow');
  }
  await snap(page, testInfo, '2-older-page');

  // A row opens its detail: its position in the chain, verified.
  await audit.openRow(second[0]);
  await expect(audit.chainStatus).toHaveText('The chain verifies at this row.');
  await expect(page.locator('main')).toContainText('system-overview');
  // The row keeps only what its policy cannot give back (`{}` here); the page shows it whole.
  await expect(page.locator('main')).toContainText('decision (in full)');
  await expect(page.locator('main')).toContainText('"required_capabilities":["local-shell"]');
  // IT-MCP asked with the realm's client-credentials token: a service account.
  await expect(page.locator('dt', { hasText: 'caller kind' }).locator('xpath=following-sibling::dd[1]')).toHaveText('service');
  await snap(page, testInfo, '3-row-detail');
});

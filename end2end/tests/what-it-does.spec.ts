import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { ItMcp } from './pages/itmcp';
import { SimulatorPage } from './pages/simulator';

// The command catalogue on the approval page and in the simulator: a call with no dangerous
// pattern, sudo or force flag (IT-MCP's own rule would have let it through) is held because of
// what its commands do, and the page says so per command. Each view is photographed at a
// laptop's and a phone's width, light and dark, into the run's test-results folder.
const VIEWS = [
  { width: 1280, height: 900 },
  { width: 390, height: 844 },
] as const;

const COMMAND = 'echo "10.0.0.5 db" | tee -a /etc/hosts && systemctl reload nginx && appctl warmup';

test('the approval page and the simulator say what each command does', async ({ page, request }, testInfo) => {
  test.setTimeout(60_000);
  const itMcp = await ItMcp.connect(request);
  const answer = await itMcp.decide({
    tool: 'ssh-exec',
    operation: 'executeCommand',
    args: { command: COMMAND },
    target: 'web-2',
    reason: 'point the app at the new database host',
  });
  expect(answer.action).toBe('require_approval');
  expect(answer.decision.matched_patterns).toEqual([]);
  expect(answer.reasons).toContain('`tee` writes /etc/hosts (system configuration)');
  expect(answer.reasons).toContain('Countersign does not know what `appctl` does');

  const portal = new Portal(page);
  await portal.signInWithProvider('alice', `/approvals/${answer.job_id}`);
  await portal.hydrated();
  const commands = page.getByTestId('commands').locator('li.command');
  await expect(commands).toHaveCount(4);
  await expect(commands.nth(0)).toContainText('read-only');
  await expect(commands.nth(1)).toContainText('system-config');
  await expect(commands.nth(1)).toContainText('writes /etc/hosts');
  await expect(commands.nth(2)).toContainText('service-disruption');
  await expect(commands.nth(3)).toContainText('unknown');
  await expect(page.locator('ul.reasons')).toContainText('Countersign does not know what appctl does');
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await page.screenshot({ path: testInfo.outputPath(`approval-${view.width}-${scheme}.png`), fullPage: true });
    }
  }

  await page.setViewportSize(VIEWS[0]);
  await page.goto('/policies');
  await portal.hydrated();
  const simulator = new SimulatorPage(page);
  await simulator.simulate(
    { tool: 'ssh-exec', operation: 'executeCommand', args: { command: COMMAND }, target: 'web-2' },
    ['ssh-linux', 'remote-exec'],
  );
  await expect(simulator.action).toHaveText('require_approval');
  await expect(simulator.commands).toHaveCount(4);
  const result = page.getByTestId('sim-result');
  for (const view of VIEWS) {
    for (const scheme of ['light', 'dark'] as const) {
      await page.setViewportSize(view);
      await page.emulateMedia({ colorScheme: scheme });
      await result.screenshot({ path: testInfo.outputPath(`simulator-${view.width}-${scheme}.png`) });
    }
  }
});

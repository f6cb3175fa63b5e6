import { test, expect, type Page } from '@playwright/test';
import { Portal, ADMIN_PASSWORD } from './pages/portal';

// Hydration must not move what the server rendered: the browser's layout-shift entries (the
// API behind Cumulative Layout Shift) from first paint until the page has hydrated and settled
// must add up to zero on every section. Times switch from UTC to the viewer's zone after
// hydration, so they reserve the width of their longer form; the failure message names the
// elements that moved. Live updates are held off (the `/events` stream is refused): other tests
// running alongside change the data, and new rows arriving are not hydration moving things.
const SECTIONS = ['/', '/approvals', '/jobs', '/audit', '/reports', '/policies', '/grants', '/profile'];

// Sign in as the admin, land on `path` with live updates held off, and wait for hydration.
async function hydratedAt(page: Page, path: string) {
  await page.route('**/events', (route) => route.abort());
  const portal = new Portal(page);
  await portal.signIn('admin', ADMIN_PASSWORD, path);
  await page.waitForURL((url) => url.pathname === path);
  await portal.hydrated();
}

for (const path of SECTIONS) {
  test(`nothing moves while ${path} hydrates`, async ({ page }) => {
    await page.addInitScript(() => {
      type Shift = { value: number; sources?: { node?: Node | null }[] };
      const shifts: { value: number; moved: string[] }[] = [];
      (window as unknown as { __shifts: typeof shifts }).__shifts = shifts;
      const describe = (node: Node | null | undefined): string => {
        if (!node) return '(gone)';
        if (!(node instanceof Element)) return node.nodeName;
        const cls = node.getAttribute('class');
        return `${node.tagName.toLowerCase()}${cls ? '.' + cls.split(/\s+/).join('.') : ''}`;
      };
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries() as unknown as Shift[]) {
          shifts.push({ value: entry.value, moved: (entry.sources ?? []).map((s) => describe(s.node)) });
        }
      }).observe({ type: 'layout-shift', buffered: true });
    });
    await page.route('**/events', (route) => route.abort());
    const portal = new Portal(page);
    await portal.signIn('admin', ADMIN_PASSWORD, path);
    // The sign-in page hydrates too: wait for the section itself before waiting for hydration,
    // or the measurement could be taken on the sign-in page or a half-loaded section.
    await page.waitForURL((url) => url.pathname === path);
    await portal.hydrated();
    await page.waitForTimeout(500);
    // The measurement itself must be live, or a zero would prove nothing.
    expect(await page.evaluate(() => PerformanceObserver.supportedEntryTypes.includes('layout-shift'))).toBe(true);
    const shifts = await page.evaluate(
      () => (window as unknown as { __shifts: { value: number; moved: string[] }[] }).__shifts,
    );
    const total = shifts.reduce((sum, s) => sum + s.value, 0);
    const moved = [...new Set(shifts.flatMap((s) => s.moved))].join(', ');
    expect(total, `cumulative layout shift on ${path} (moved: ${moved})`).toBe(0);
  });
}

// The header streams in order too: the time-zone switch used to come before the signed-in
// person's block, which the server sends only once its resource has resolved, so a browser that
// painted in between saw the switch pushed left when the block arrived (a shift of about 0.001 at
// `button.tz-switch`, about one run in 40). Removing the block stands in for "not arrived yet":
// nothing already painted in the header may move.
test('the header keeps its place while the signed-in person is still arriving', async ({ page }) => {
  await hydratedAt(page, '/jobs');
  const places = await page.evaluate(() => {
    const user = document.querySelector('.topbar .user');
    if (!user) return null;
    const place = () =>
      ['.brand', '.nav a', '.tz-switch'].map((selector) => {
        const box = document.querySelector(selector)?.getBoundingClientRect();
        return box ? `${selector} ${box.x},${box.y} ${box.width}x${box.height}` : `${selector} missing`;
      });
    const arrived = place();
    user.remove();
    return { arrived, before: place() };
  });
  expect(places, 'the header shows the signed-in person').not.toBeNull();
  expect(places!.before).toEqual(places!.arrived);
});

// A slow response reaches the browser in pieces, and the browser paints what it has parsed so
// far. A panel's width must therefore not depend on how many panels follow it, or the first
// ones move when the rest arrive (this once failed the test above on a busy machine). Removing
// the later panels stands in for "not parsed yet".
test('dashboard panels keep their width while later panels are still arriving', async ({ page }) => {
  await hydratedAt(page, '/');
  const widths = await page.evaluate(() => {
    const grid = document.querySelector('.panels');
    if (!grid) return null;
    const panels = [...grid.querySelectorAll(':scope > .panel')];
    const width = () => panels[0].getBoundingClientRect().width;
    const all = width();
    for (const later of panels.slice(1)) later.remove();
    return { count: panels.length, all, alone: width() };
  });
  expect(widths, 'the dashboard has a .panels grid').not.toBeNull();
  expect(widths!.count).toBeGreaterThan(1);
  expect(widths!.alone).toBe(widths!.all);
});

import { test, expect } from '@playwright/test';
import { Portal, SECTIONS } from './pages/portal';

test.describe('server-rendered shell (JavaScript disabled)', () => {
  test.use({ javaScriptEnabled: false });

  test('every section is rendered on the server with its navigation', async ({ page }) => {
    const portal = new Portal(page);
    await portal.signIn();
    await expect(page).toHaveURL(/\/$/);
    const response = await portal.open('/');
    expect(response?.status()).toBe(200);
    await expect(portal.heading).toHaveText('Dashboard');
    await expect(page).toHaveTitle('Dashboard · Countersign');
    for (const section of SECTIONS) {
      await expect(portal.link(section)).toBeVisible();
    }
    await expect(portal.link('Dashboard')).toHaveAttribute('aria-current', 'page');

    // Links are plain anchors: navigation works without WASM.
    await portal.link('Approvals').click();
    await expect(page).toHaveURL(/\/approvals$/);
    await expect(portal.heading).toHaveText('Approvals');
    await expect(portal.link('Approvals')).toHaveAttribute('aria-current', 'page');
  });

  test('the interactive switch does nothing before hydration', async ({ page }) => {
    const portal = new Portal(page);
    await portal.signIn();
    await expect(portal.tzSwitch).toHaveText('Times in UTC');
    await portal.tzSwitch.click();
    await expect(portal.tzSwitch).toHaveText('Times in UTC');
    await expect(page.locator('body')).not.toHaveAttribute('data-hydrated', 'true');
  });

  test('an unknown address is a 404 page', async ({ page }) => {
    const portal = new Portal(page);
    await portal.signIn();
    const response = await portal.open('/no-such-page');
    expect(response?.status()).toBe(404);
    await expect(portal.heading).toHaveText('Not found');
  });
});

test.describe('hydrated portal', () => {
  test('the WASM bundle hydrates and the switch responds', async ({ page }) => {
    const portal = new Portal(page);
    const errors = portal.watchForErrors();
    await portal.signIn();
    await portal.hydrated();
    // Once hydrated, times follow the viewer's zone; the switch goes back to UTC and returns.
    await expect(portal.tzSwitch).toHaveText('Times in local time');
    await expect(portal.tzSwitch).toHaveAttribute('aria-pressed', 'true');
    await portal.tzSwitch.click();
    await expect(portal.tzSwitch).toHaveText('Times in UTC');
    await expect(portal.tzSwitch).toHaveAttribute('aria-pressed', 'false');
    await portal.tzSwitch.click();
    await expect(portal.tzSwitch).toHaveText('Times in local time');
    expect(errors).toEqual([]);
  });

  test('navigation after hydration stays in the page and keeps state', async ({ page }) => {
    const portal = new Portal(page);
    const errors = portal.watchForErrors();
    await portal.signIn();
    await portal.hydrated();
    await portal.tzSwitch.click();
    for (const section of SECTIONS.slice(1)) {
      await portal.link(section).click();
      await expect(portal.heading).toHaveText(section);
      await expect(portal.link(section)).toHaveAttribute('aria-current', 'page');
    }
    // Client-side routing keeps the switch's state: no full page load happened.
    await expect(portal.tzSwitch).toHaveText('Times in UTC');
    expect(errors).toEqual([]);
  });
});

test.describe('times', () => {
  test.use({ timezoneId: 'Asia/Kolkata' });

  test("times show in the viewer's zone once hydrated, with UTC on hover", async ({ page }) => {
    const portal = new Portal(page);
    await portal.signIn('admin', undefined, '/audit');
    await page.goto('/audit');
    const first = page.getByTestId('audit-rows').locator('tbody tr').first().locator('time');
    // Server-rendered: UTC, the instant in `datetime`.
    const iso = await first.getAttribute('datetime');
    expect(iso).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    const utc = `${iso!.slice(0, 10)} ${iso!.slice(11, 23)} UTC`;
    await expect(first).toHaveAttribute('title', utc);
    await portal.hydrated();
    // Hydrated: the same instant in India Standard Time (UTC+05:30).
    const local = new Date(Date.parse(iso!) + 330 * 60_000).toISOString();
    await expect(first).toHaveText(`${local.slice(0, 10)} ${local.slice(11, 23)} +05:30`);
    await expect(first).toHaveAttribute('title', utc);
    await portal.tzSwitch.click();
    await expect(first).toHaveText(utc);
  });
});

test('health and readiness probes answer', async ({ request }) => {
  const health = await request.get('/healthz');
  expect(health.status()).toBe(200);
  expect(await health.text()).toBe('ok');
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  // The e2e server also has an identity provider configured (see playwright.config.ts).
  expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', identity_provider: 'ok' } });
});

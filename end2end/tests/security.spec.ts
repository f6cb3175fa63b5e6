import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';

test('the page runs under a strict Content-Security-Policy and still hydrates', async ({ page }) => {
  const portal = new Portal(page);
  const errors = portal.watchForErrors();
  await portal.signIn();
  const response = await portal.open('/');
  const csp = response?.headers()['content-security-policy'] ?? '';
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).toMatch(/script-src 'self' 'nonce-[^']+' 'wasm-unsafe-eval'/);
  expect(response?.headers()['x-content-type-options']).toBe('nosniff');
  await portal.hydrated();
  await portal.tzSwitch.click();
  await expect(portal.tzSwitch).toHaveText('Times in UTC');
  expect(errors.filter((e) => e.includes('Content Security Policy'))).toEqual([]);
  expect(errors).toEqual([]);
});

test('a cross-origin POST is refused', async ({ request }) => {
  const refused = await request.post('/api/anything', {
    headers: { Origin: 'http://evil.example', Cookie: 'id=1' },
  });
  expect(refused.status()).toBe(403);
  expect(await refused.text()).toBe('cross-origin request refused');
});

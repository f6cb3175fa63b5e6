import { test, expect } from '@playwright/test';
import { Portal } from './pages/portal';
import { issuer, providerLogin, realm, serviceToken } from './pages/realm';

// Sign-in through the OpenID provider started by playwright.config.ts, which looks like a
// Keycloak realm (same paths, login form, claims).

test('alice signs in through the provider and sees her name and roles', async ({ page }) => {
  const portal = new Portal(page);
  const errors = portal.watchForErrors();
  await page.goto('/approvals');
  await expect(page).toHaveURL(/\/sign-in\?next=\/approvals$/);
  await page.locator('#sign-in-provider').click();
  // At the provider: its own page, its own origin.
  await expect(page).toHaveURL(new RegExp(`^${issuer()}/login-actions/`));
  await providerLogin(page, 'alice');
  await expect(page).toHaveURL(/\/approvals$/);
  await portal.hydrated();
  const user = page.getByTestId('current-user');
  await expect(user).toContainText('Alice Anders');
  await expect(user).toContainText('approver');
  // Keycloak's built-in roles are not shown as portal roles.
  await expect(user).not.toContainText('default-roles');
  expect(errors).toEqual([]);
});

test('people get the roles their realm roles map to', async ({ page }) => {
  for (const [name, role] of [['bob', 'auditor'], ['carol', 'viewer']] as const) {
    await page.context().clearCookies();
    await page.goto('/sign-in');
    await page.locator('#sign-in-provider').click();
    await providerLogin(page, name);
    const user = page.getByTestId('current-user');
    await expect(user).toContainText(realm.users[name].name);
    await expect(user).toContainText(role);
    await expect(user).not.toContainText('approver');
  }
});

test('a wrong password stays at the provider', async ({ page }) => {
  await page.goto('/sign-in');
  await page.locator('#sign-in-provider').click();
  await providerLogin(page, 'alice', 'not-alices-password');
  await expect(page.getByRole('alert')).toHaveText('Invalid username or password.');
  await expect(page).toHaveURL(new RegExp(`^${issuer()}/`));
});

test('signing out ends the provider session too', async ({ page }) => {
  await page.goto('/sign-in');
  await page.locator('#sign-in-provider').click();
  await providerLogin(page, 'dave');
  const user = page.getByTestId('current-user');
  await expect(user).toContainText('Dave Dunn');
  await user.getByRole('button', { name: 'Sign out' }).click();
  // Through the provider's end-session endpoint and back to our sign-in page.
  await expect(page).toHaveURL(/\/sign-in\?signed_out=1$/);
  await expect(page.getByRole('alert')).toHaveText('You have signed out.');
  await page.goto('/jobs');
  await expect(page).toHaveURL(/\/sign-in/);
  // The provider asks for the password again: its session ended as well.
  await page.locator('#sign-in-provider').click();
  await expect(page.locator('#kc-login')).toBeVisible();
});

test('a sign-in response is used once: replaying the callback is refused', async ({ page, browser }) => {
  await page.goto('/sign-in');
  await page.locator('#sign-in-provider').click();
  const callback = page.waitForRequest((r) => r.url().includes('/auth/callback?'));
  await providerLogin(page, 'erin');
  const callbackUrl = (await callback).url();
  await expect(page.getByTestId('current-user')).toContainText('Erin Evans');

  // The same browser: the state was consumed by the first use.
  await page.goto(callbackUrl);
  await expect(page).toHaveURL(/\/sign-in\?error=oidc$/);
  await expect(page.getByRole('alert')).toContainText('did not succeed');

  // Another browser (an attacker holding the URL): no session knows that state.
  const other = await browser.newContext();
  const stranger = await other.newPage();
  await stranger.goto(callbackUrl);
  await expect(stranger).toHaveURL(/\/sign-in\?error=oidc$/);
  await stranger.goto('/approvals');
  await expect(stranger).toHaveURL(/\/sign-in/);
  await other.close();
});

test('the local-account form is still there for break-glass admins', async ({ page }) => {
  await page.goto('/sign-in');
  await expect(page.locator('#sign-in-provider')).toHaveText('Sign in with Keycloak');
  await expect(page.locator('#sign-in')).toBeVisible();
});

test.describe('API bearer tokens from the provider', () => {
  test('IT-MCP\'s client-credentials token is accepted, with its capabilities', async ({ request }) => {
    const token = await serviceToken();
    const response = await request.get('/api/v1/whoami', { headers: { authorization: `Bearer ${token}` } });
    expect(response.status()).toBe(200);
    const caller = await response.json();
    expect(caller.id).toBe('it-mcp');
    expect(caller.kind).toBe('service');
    expect(caller.capabilities).toEqual(expect.arrayContaining(['ssh-linux', 'remote-exec']));
  });

  test('a tampered or foreign token is refused with 401', async ({ request }) => {
    const token = await serviceToken();
    const [header, payload, signature] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    claims.realm_access = { roles: ['admin', 'local-sudo'] };
    const forged = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
    for (const bad of [forged, `${header}.${payload}.`, 'eyJhbGciOiJub25lIn0.e30.']) {
      const response = await request.get('/api/v1/whoami', { headers: { authorization: `Bearer ${bad}` } });
      expect(response.status()).toBe(401);
      expect(response.headers()['www-authenticate']).toBe('Bearer');
    }
  });
});

test('readiness reports the identity provider', async ({ request }) => {
  const response = await request.get('/readyz');
  expect(response.status()).toBe(200);
  const body = await response.json();
  expect(body.checks.identity_provider).toBe('ok');
});

import { test, expect } from '@playwright/test';
import { Portal, ADMIN_PASSWORD } from './pages/portal';

test('an anonymous visitor is sent to the sign-in page and back after signing in', async ({ page }) => {
  await page.goto('/audit');
  await expect(page).toHaveURL(/\/sign-in\?next=\/audit$/);
  await page.locator('#username').fill('admin');
  await page.locator('#password').fill(ADMIN_PASSWORD);
  await page.locator('#sign-in').click();
  await expect(page).toHaveURL(/\/audit$/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Audit');
});

test('a wrong password is refused with a message that reveals nothing', async ({ page }) => {
  const portal = new Portal(page);
  await portal.signIn('admin', 'not-the-password-at-all');
  await expect(page).toHaveURL(/\/sign-in\?error=invalid/);
  await expect(page.getByRole('alert')).toHaveText('Unknown user or wrong password.');
  await portal.signIn('nobody-here', 'not-the-password-at-all');
  await expect(page.getByRole('alert')).toHaveText('Unknown user or wrong password.');
});

test('the signed-in person is shown, and signing out ends the session', async ({ page }) => {
  const portal = new Portal(page);
  const errors = portal.watchForErrors();
  await portal.signIn();
  await portal.hydrated();
  const user = page.getByTestId('current-user');
  await expect(user).toContainText('admin');
  await user.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/sign-in\?signed_out=1$/);
  await expect(page.getByRole('alert')).toHaveText('You have signed out.');
  await page.goto('/jobs');
  await expect(page).toHaveURL(/\/sign-in/);
  expect(errors).toEqual([]);
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('local-account sign-in works as a plain form', async ({ page }) => {
    const portal = new Portal(page);
    await portal.signIn('admin', ADMIN_PASSWORD, '/policies');
    await expect(page).toHaveURL(/\/policies$/);
    await expect(page.getByTestId('current-user')).toContainText('admin');
  });
});

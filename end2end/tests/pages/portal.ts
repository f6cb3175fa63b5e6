import { expect, type Page, type Locator } from '@playwright/test';
import { providerLogin } from './realm';

export const ADMIN_PASSWORD = 'e2e-admin-password-0123';

export const SECTIONS = ['Dashboard', 'Approvals', 'Jobs', 'Audit', 'Reports', 'Policies', 'Grants'] as const;

/** The portal's frame: navigation, heading and the header's time-zone switch. */
export class Portal {
  readonly nav: Locator;
  readonly heading: Locator;
  readonly tzSwitch: Locator;

  constructor(readonly page: Page) {
    this.nav = page.getByRole('navigation', { name: 'Main' });
    this.heading = page.getByRole('heading', { level: 1 });
    this.tzSwitch = page.getByTestId('tz-switch');
  }

  /** Collect console errors and uncaught exceptions; a page that logs one fails the test. */
  watchForErrors(): string[] {
    const errors: string[] = [];
    this.page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    this.page.on('pageerror', (err) => errors.push(err.message));
    return errors;
  }

  async open(path = '/') {
    return this.page.goto(path);
  }

  /** Open `path`, sign in at the OpenID provider as `user`, and land back on `path`. */
  async signInWithProvider(user: string, path = '/') {
    await this.page.goto(path);
    await this.page.locator('#sign-in-provider').click();
    await providerLogin(this.page, user);
    await expect(this.page).toHaveURL(new RegExp(`${path.replace(/[?]/g, '\\?')}$`));
  }

  /** Sign in through the local-account form (works with or without JavaScript). */
  async signIn(user = 'admin', password = ADMIN_PASSWORD, path = '/') {
    await this.page.goto(`/sign-in?next=${encodeURIComponent(path)}`);
    await this.page.locator('#username').fill(user);
    await this.page.locator('#password').fill(password);
    await this.page.locator('#sign-in').click();
  }

  /** Resolves once the WASM bundle has hydrated the page. */
  async hydrated() {
    await expect(this.page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  }

  link(section: string): Locator {
    return this.nav.getByRole('link', { name: section, exact: true });
  }
}

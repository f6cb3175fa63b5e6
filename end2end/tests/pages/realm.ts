import { expect, type Page } from '@playwright/test';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The test realm (oidc/realm.json), as the provider started by playwright.config.ts serves it. */
export const realm = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'oidc', 'realm.json'), 'utf8')) as {
  realm: string;
  users: Record<string, { name: string; roles: string[] }>;
  clients: Record<'portal' | 'itMcp', { id: string; secret: string }>;
  /** A public client an MCP client uses to sign its person in (PKCE, loopback redirect). */
  assistant: { id: string; redirect: string };
  serviceRoles: string[];
};

export const passwordOf = (user: string) => `${user}-e2e-password`;

export const issuerFor = (port: number) => `http://127.0.0.1:${port}/realms/${realm.realm}`;

/** The provider's issuer URL for this run. */
export function issuer(): string {
  const port = Number(process.env.E2E_OIDC_PORT ?? Number(process.env.E2E_PORT ?? 3900) + 50);
  return issuerFor(port);
}

/** Fill in the provider's login form (Keycloak's field ids) and submit it. */
export async function providerLogin(page: Page, user: string, password = passwordOf(user)) {
  await expect(page.locator('#kc-login')).toBeVisible();
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(password);
  await page.locator('#kc-login').click();
}

/** A client-credentials access token for a service client (like IT-MCP's). */
export async function serviceToken(client = realm.clients.itMcp): Promise<string> {
  const response = await fetch(`${issuer()}/protocol/openid-connect/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { access_token: string };
  return body.access_token;
}
